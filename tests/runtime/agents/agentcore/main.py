"""An ordinary AgentCore agent: nothing in it knows about garrison."""

import threading
import uuid

from bedrock_agentcore.runtime import BedrockAgentCoreApp
from openai import OpenAI

app = BedrockAgentCoreApp()
model = OpenAI()  # OPENAI_BASE_URL and OPENAI_API_KEY come from the environment
INSTANCE = uuid.uuid4().hex  # one per process: tells sandboxes apart
turns: list[str] = []


def _stream(prompt: str):
    for chunk in model.chat.completions.create(model="fake-model", stream=True,
                                               messages=[{"role": "user", "content": prompt}]):
        if chunk.choices and chunk.choices[0].delta.content:
            yield {"delta": chunk.choices[0].delta.content}
    yield {"done": True, "instance": INSTANCE}


@app.entrypoint
def invoke(payload, context):
    if payload.get("busy_s"):
        task = app.add_async_task("background-work")
        threading.Timer(float(payload["busy_s"]), app.complete_async_task, args=(task,)).start()
        return {"started": True, "instance": INSTANCE}
    prompt = payload.get("prompt", "hello")
    if payload.get("stream"):
        return _stream(prompt)
    turns.append(prompt)
    reply = model.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": prompt}])
    return {"answer": reply.choices[0].message.content, "session": context.session_id, "instance": INSTANCE,
            "turns": len(turns)}


if __name__ == "__main__":
    app.run()
