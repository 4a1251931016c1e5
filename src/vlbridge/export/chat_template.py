"""A vlbridge chat template (``data.template.ChatTemplate``) as a Jinja chat template for transformers processors.

It renders exactly the text ``SequenceBuilder.build(turns, for_generation=True)`` tokenizes: BOS when the
template adds one, the default system prompt when the conversation has none, each message between its role
markers, and the assistant prefix when a generation prompt is asked for. Content given as parts is its parts
in order, each image as ``<image>`` and parts joined by newlines (as the server and ``Predictor.ask`` write
it), so ``[{"type": "image"}, {"type": "text", "text": q}]`` reads ``"<image>\\nq"``.
"""
from __future__ import annotations

import json

from ..data.template import IMAGE_TOKEN, ChatTemplate


def jinja_chat_template(t: ChatTemplate) -> str:
    q = json.dumps                                   # a Jinja string literal of the exact marker text
    system = (f"{{%- if messages[0]['role'] != 'system' -%}}{{{{ {q(t.system_prefix + t.default_system + t.user_suffix)} }}}}"
              f"{{%- endif -%}}") if t.default_system else ""
    return (
        ("{{- bos_token -}}" if t.add_bos else "")
        + system
        + "{%- for message in messages -%}"
        "{%- if message['content'] is string -%}{%- set text = message['content'] -%}"
        "{%- else -%}{%- set parts = namespace(items=[]) -%}"
        "{%- for part in message['content'] -%}"
        f"{{%- if part['type'] in ['image', 'image_url'] -%}}{{%- set parts.items = parts.items + [{q(IMAGE_TOKEN)}] -%}}"
        "{%- elif part['type'] == 'text' -%}{%- set parts.items = parts.items + [part['text']] -%}{%- endif -%}"
        "{%- endfor -%}{%- set text = parts.items | join('\\n') -%}{%- endif -%}"
        f"{{%- if message['role'] == 'system' -%}}{{{{ {q(t.system_prefix)} + text + {q(t.user_suffix)} }}}}"
        f"{{%- elif message['role'] == 'user' -%}}{{{{ {q(t.user_prefix)} + text + {q(t.user_suffix)} }}}}"
        f"{{%- elif message['role'] == 'assistant' -%}}{{{{ {q(t.assistant_prefix)} + text + {q(t.assistant_suffix)} }}}}"
        "{%- endif -%}{%- endfor -%}"
        f"{{%- if add_generation_prompt -%}}{{{{ {q(t.assistant_prefix)} }}}}{{%- endif -%}}"
    )
