"""The exported Jinja chat template renders, for every vlbridge template, exactly the text vlbridge's
SequenceBuilder puts together (markers, default system prompt, BOS, image placeholders, generation prompt)."""
from __future__ import annotations

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from vlbridge.data.template import TEMPLATES
from vlbridge.export.chat_template import jinja_chat_template


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_rendered_text_matches_the_template(name):
    t = TEMPLATES[name]
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)     # as transformers renders
    template = env.from_string(jinja_chat_template(t))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]},
                {"role": "assistant", "content": "A cat."}, {"role": "user", "content": "More?\nSay it."}]
    expected = (("<s>" if t.add_bos else "") + (t.system_prefix + t.default_system + t.user_suffix if t.default_system else "")
                + t.user_prefix + "<image>\nWhat?" + t.user_suffix + t.assistant_prefix + "A cat." + t.assistant_suffix
                + t.user_prefix + "More?\nSay it." + t.user_suffix + t.assistant_prefix)
    assert template.render(messages=messages, add_generation_prompt=True, bos_token="<s>") == expected
    system = [{"role": "system", "content": "Be brief."}] + messages
    rendered = template.render(messages=system, add_generation_prompt=False, bos_token="<s>")
    if t.default_system:
        assert t.default_system not in rendered                  # the conversation's own system prompt replaces it
    assert rendered.startswith(("<s>" if t.add_bos else "") + t.system_prefix + "Be brief." + t.user_suffix)
    assert not rendered.endswith(t.assistant_prefix)
