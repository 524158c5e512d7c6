"""An AgentCore agent that keeps its conversation in the session state file garrison restores.

GARRISON_SESSION_STATE names the file; without garrison the agent simply starts empty.
"""

import json
import os
import uuid

from bedrock_agentcore.runtime import BedrockAgentCoreApp

app = BedrockAgentCoreApp()
INSTANCE = uuid.uuid4().hex  # one per process: tells sandboxes apart
STATE = os.environ.get("GARRISON_SESSION_STATE")


def _load() -> list[str]:
    try:
        with open(STATE) as fh:
            return json.load(fh)["turns"]
    except (TypeError, OSError, ValueError, KeyError):
        return []


turns = _load()
restored = len(turns)


@app.entrypoint
def invoke(payload, context):
    turns.append(payload.get("prompt", ""))
    if STATE:
        os.makedirs(os.path.dirname(STATE), exist_ok=True)
        with open(STATE + ".tmp", "w") as fh:
            json.dump({"turns": turns}, fh)
        os.replace(STATE + ".tmp", STATE)
    return {"turns": turns, "restored": restored, "instance": INSTANCE}


if __name__ == "__main__":
    app.run()
