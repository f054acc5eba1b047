"""End-to-end checks with the official `openai` and `anthropic` Python SDKs as clients.

Run by tests/tests/python_sdks.rs against a real gateway whose default provider is
`openai-custom` and which also serves `claude-custom`, both backed by the mock upstream.
Environment: GATEWAY_URL (http://host:port), API_KEY. Exits non-zero on the first failure.
"""

import json
import os
import sys

import anthropic
import openai

BASE = os.environ["GATEWAY_URL"]
KEY = os.environ["API_KEY"]
TEXT = "Hello from mock upstream."
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "weather for a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
CLAUDE_TOOLS = [{"name": "get_weather", "description": "weather for a city",
                 "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]

checks = []


def check(name):
    def wrap(f):
        checks.append((name, f))
        return f
    return wrap


def eq(got, want, what):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


oa = openai.OpenAI(base_url=f"{BASE}/v1", api_key=KEY, max_retries=0)
oa_claude = openai.OpenAI(base_url=f"{BASE}/claude-custom/v1", api_key=KEY, max_retries=0)
an = anthropic.Anthropic(base_url=BASE, api_key=KEY, max_retries=0)
an_openai = anthropic.Anthropic(base_url=f"{BASE}/openai-custom", api_key=KEY, max_retries=0)


@check("openai chat")
def _():
    r = oa.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    eq(r.choices[0].message.content, TEXT, "content")
    eq(r.choices[0].finish_reason, "stop", "finish_reason")


@check("openai chat through the claude upstream")
def _():
    r = oa_claude.chat.completions.create(model="claude-sonnet-4-5", messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
    eq(r.choices[0].message.content, TEXT, "content")
    if r.usage is None or r.usage.prompt_tokens != 12:
        raise AssertionError(f"usage mapped from the Claude upstream: {r.usage!r}")


@check("openai streaming")
def _():
    for client in (oa, oa_claude):
        text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="gpt-4o", stream=True, messages=[{"role": "user", "content": "hi"}]) if c.choices)
        eq(text, TEXT, "streamed text")


@check("openai tool call round trip")
def _():
    for client in (oa, oa_claude):
        msgs = [{"role": "user", "content": "weather in Paris?"}]
        r = client.chat.completions.create(model="mock-tool", messages=msgs, tools=TOOLS)
        call = r.choices[0].message.tool_calls[0]
        eq(call.function.name, "get_weather", "tool name")
        eq(json.loads(call.function.arguments), {"city": "Paris"}, "tool arguments")
        eq(r.choices[0].finish_reason, "tool_calls", "finish_reason")
        msgs += [r.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"}]
        r2 = client.chat.completions.create(model="mock-tool", messages=msgs, tools=TOOLS)
        eq(r2.choices[0].message.content, "The tool said: sunny, 21C", "answer using the tool result")


@check("openai streaming tool call")
def _():
    for client in (oa, oa_claude):
        name, args = "", ""
        for c in client.chat.completions.create(model="mock-tool", stream=True, tools=TOOLS,
                                                messages=[{"role": "user", "content": "weather?"}]):
            for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
                name += tc.function.name or ""
                args += tc.function.arguments or ""
        eq(name, "get_weather", "streamed tool name")
        eq(json.loads(args), {"city": "Paris"}, "streamed tool arguments")


@check("openai errors")
def _():
    try:
        oa.chat.completions.create(model="mock-400", messages=[{"role": "user", "content": "x"}])
        raise AssertionError("expected BadRequestError")
    except openai.BadRequestError as e:
        eq(e.status_code, 400, "status")
    bad = openai.OpenAI(base_url=f"{BASE}/v1", api_key="wrong", max_retries=0)
    try:
        bad.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
        raise AssertionError("expected AuthenticationError")
    except openai.AuthenticationError as e:
        eq(e.status_code, 401, "status")


@check("openai model list")
def _():
    ids = [m.id for m in oa.models.list()]
    if "gpt-4o" not in ids:
        raise AssertionError(f"models: {ids}")


@check("anthropic messages")
def _():
    for client in (an, an_openai):
        r = client.messages.create(model="claude-sonnet-4-5", max_tokens=100, system="be brief",
                                   messages=[{"role": "user", "content": "hi"}])
        eq(r.content[0].text, TEXT, "text")
        eq(r.stop_reason, "end_turn", "stop_reason")


@check("anthropic streaming")
def _():
    for client in (an, an_openai):
        with client.messages.stream(model="claude-sonnet-4-5", max_tokens=100, messages=[{"role": "user", "content": "hi"}]) as s:
            text = "".join(s.text_stream)
            final = s.get_final_message()
        eq(text, TEXT, "streamed text")
        eq(final.stop_reason, "end_turn", "final stop_reason")


@check("anthropic tool use round trip")
def _():
    for client in (an, an_openai):
        msgs = [{"role": "user", "content": "weather in Paris?"}]
        r = client.messages.create(model="mock-tool", max_tokens=100, tools=CLAUDE_TOOLS, messages=msgs)
        use = next(b for b in r.content if b.type == "tool_use")
        eq(use.name, "get_weather", "tool name")
        eq(use.input, {"city": "Paris"}, "tool input")
        eq(r.stop_reason, "tool_use", "stop_reason")
        msgs += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in r.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 21C"}]}]
        r2 = client.messages.create(model="mock-tool", max_tokens=100, tools=CLAUDE_TOOLS, messages=msgs)
        eq(r2.content[0].text, "The tool said: sunny, 21C", "answer using the tool result")


@check("anthropic streaming tool use")
def _():
    for client in (an, an_openai):
        with client.messages.stream(model="mock-tool", max_tokens=100, tools=CLAUDE_TOOLS,
                                    messages=[{"role": "user", "content": "weather?"}]) as s:
            final = s.get_final_message()
        use = next(b for b in final.content if b.type == "tool_use")
        eq(use.input, {"city": "Paris"}, "streamed tool input")


@check("anthropic errors and token count")
def _():
    try:
        an.messages.create(model="mock-400", max_tokens=5, messages=[{"role": "user", "content": "x"}])
        raise AssertionError("expected BadRequestError")
    except anthropic.BadRequestError as e:
        eq(e.status_code, 400, "status")
    bad = anthropic.Anthropic(base_url=BASE, api_key="wrong", max_retries=0)
    try:
        bad.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=[{"role": "user", "content": "x"}])
        raise AssertionError("expected AuthenticationError")
    except anthropic.AuthenticationError as e:
        eq(e.status_code, 401, "status")
    n = an.messages.count_tokens(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hello there, how are you?"}])
    if n.input_tokens <= 0:
        raise AssertionError(f"token count {n.input_tokens}")


passed = failed = 0
for name, f in checks:
    try:
        f()
        passed += 1
        print(f"ok   {name}")
    except Exception as e:  # report every check, then fail
        failed += 1
        print(f"FAIL {name}: {type(e).__name__}: {e}")
print(f"python sdk e2e: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
