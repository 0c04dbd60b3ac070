"""The Responses API and Anthropic Messages as chat completions, both ways, without a server: tool
calls, reasoning, images and the stream's events."""

from __future__ import annotations

import json
from typing import Any

from gateway.messages_api import MessagesTranslation
from gateway.metering import Usage
from gateway.refusal import Refusal
from gateway.responses_api import ResponsesTranslation
from gateway.translation import chat_chunks

USAGE = Usage(prompt_tokens=12, completion_tokens=5, cached_tokens=2, reasoning_tokens=1)


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    payload = {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in raw.split(b"\n\n"):
        if block:
            head, data = block.split(b"\n", 1)
            out.append((head.decode().removeprefix("event: "), json.loads(data.removeprefix(b"data: "))))
    return out


def test_responses_input_items_tools_and_format_become_a_chat_request() -> None:
    chat = ResponsesTranslation().request(
        {
            "model": "m",
            "instructions": "Be brief.",
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "what is"},
                        {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low"},
                    ],
                },
                {"type": "function_call", "call_id": "call_1", "name": "look", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "a cat"},
            ],
            "tools": [{"type": "function", "name": "look", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "look"},
            "text": {"format": {"type": "json_schema", "name": "a", "schema": {"type": "object"}}},
            "max_output_tokens": 50,
            "reasoning": {"effort": "low"},
            "store": True,
        }
    )
    assert not isinstance(chat, Refusal)
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
    ]
    assert chat["tools"] == [
        {"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "look"}}
    assert chat["response_format"]["json_schema"]["name"] == "a" and chat["max_tokens"] == 50
    assert chat["reasoning_effort"] == "low"


def test_responses_answer_and_stream_carry_calls_reasoning_and_usage() -> None:
    t = ResponsesTranslation()
    message = {
        "content": "hi",
        "reasoning_content": "think",
        "tool_calls": [
            {"id": "call_9", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
        ],
    }
    answer = t.response(
        {"id": "c1", "model": "m", "choices": [{"message": message, "finish_reason": "length"}]}, USAGE
    )
    assert [o["type"] for o in answer["output"]] == ["reasoning", "message", "function_call"]
    assert answer["status"] == "incomplete" and answer["incomplete_details"] == {
        "reason": "max_output_tokens"
    }
    assert answer["usage"] == {
        "input_tokens": 12,
        "input_tokens_details": {"cached_tokens": 2},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 1},
        "total_tokens": 17,
    }
    stream = t.stream({}, "m")
    raw = stream.feed(
        chunk({"role": "assistant", "content": ""}) + chunk({"content": "he"}) + chunk({"content": "llo"})
    )
    raw += stream.feed(
        chunk({"tool_calls": [{"index": 0, "id": "call_9", "function": {"name": "f", "arguments": '{"a"'}}]})
    )
    raw += stream.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}, "tool_calls"))
    raw += stream.close(USAGE, None)
    seen = events(raw)
    assert [s[1]["sequence_number"] for s in seen] == list(range(len(seen)))
    assert all(kind == data["type"] for kind, data in seen)
    last = seen[-1][1]["response"]
    assert seen[-1][0] == "response.completed" and last["usage"]["output_tokens"] == 5
    assert [o["type"] for o in last["output"]] == ["message", "function_call"]
    assert last["output"][0]["content"][0]["text"] == "hello" and last["output"][1]["arguments"] == '{"a":1}'
    failed = t.stream({}, "m")
    assert events(failed.close(USAGE, "upstream_error"))[-1][0] == "response.failed"


def test_anthropic_blocks_become_chat_messages_and_back() -> None:
    t = MessagesTranslation()
    chat = t.request(
        {
            "model": "m",
            "max_tokens": 20,
            "system": [{"type": "text", "text": "Be brief."}],
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/jpeg", "data": "AA"},
                        },
                        {"type": "text", "text": "what?"},
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hm"},
                        {"type": "tool_use", "id": "tu_1", "name": "look", "input": {"q": 1}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "tu_1",
                            "content": [{"type": "text", "text": "a cat"}],
                        }
                    ],
                },
            ],
            "tools": [{"name": "look", "description": "d", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any"},
            "stop_sequences": ["END"],
        }
    )
    assert not isinstance(chat, Refusal)
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AA"}},
                {"type": "text", "text": "what?"},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "tu_1", "type": "function", "function": {"name": "look", "arguments": '{"q":1}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "tu_1", "content": "a cat"},
    ]
    assert chat["tool_choice"] == "required" and chat["stop"] == ["END"] and chat["max_tokens"] == 20
    message = {
        "content": None,
        "tool_calls": [{"id": "call_2", "function": {"name": "look", "arguments": '{"q":2}'}}],
    }
    answer = t.response(
        {"id": "c", "model": "m", "choices": [{"message": message, "finish_reason": "tool_calls"}]}, USAGE
    )
    assert answer["stop_reason"] == "tool_use" and answer["content"] == [
        {"type": "tool_use", "id": "call_2", "name": "look", "input": {"q": 2}}
    ]
    assert answer["usage"]["input_tokens"] == 10 and answer["usage"]["cache_read_input_tokens"] == 2
    stream = t.stream({}, "m")
    raw = stream.feed(chunk({"reasoning_content": "hm"}) + chunk({"content": "hi"}) + b"data: [DONE]\n\n")
    raw += stream.close(USAGE, None)
    kinds = [k for k, _ in events(raw)]
    assert kinds == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events(raw)[-2][1]["usage"]["output_tokens"] == 5


def test_chat_chunks_reads_crlf_events_and_skips_comments() -> None:
    raw = b': keep-alive\r\n\r\ndata: {"a": 1}\r\n\r\ndata: [DONE]\r\n\r\n'
    assert list(chat_chunks(raw)) == [{"a": 1}, None]
