"""One training example drawn as tokens, coloured by whether training learns them (plain HTML, no widgets, so
notebooks run under papermill can show it too)."""

from __future__ import annotations

import html

from ftkit.data.encoding import IGNORE, encode_row, encode_rows

TRAINED, MASKED = "#b9e4c0", "#dcdcdc"


def _pieces(tokenizer, ids: list[int]) -> list[tuple[int, int, str]]:
    """(first index, end index, text) per token. Each piece is the growth of the decoded prefix, which keeps
    the spaces SentencePiece tokenizers drop when one token is decoded alone; a token that ends inside a
    multi-byte character is joined with the next ones until the text decodes cleanly."""

    def decode(part):
        return tokenizer.decode(part, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    out, start, before = [], 0, ""
    for end in range(1, len(ids) + 1):
        text = decode(ids[:end])
        if text.endswith("\ufffd") and end < len(ids):
            continue
        piece = text[len(before) :] if text.startswith(before) else decode(ids[start:end])
        out.append((start, end, piece))
        start, before = end, text
    return out


def _show(text: str) -> str:
    # newlines stay visible as a symbol and still break the line
    return html.escape(text).replace("\n", "\u21b5\n")


def render_trained_tokens(
    tokenizer, prompt: str | None, answer: str, mask_prompt: bool, max_seq_length: int | None = None
) -> str:
    """HTML of one row as training encodes it (``ftkit.data.encoding.encode_rows``): every token in a box, green
    when it is a prediction target (in the loss), grey when it is not (the first token, and with
    ``mask_prompt`` the whole prompt and chat-template header). The EOS token that ends the answer is
    outlined: it is trained, so the fine-tuned model learns to stop. With ``max_seq_length`` the row is cut as
    the job cuts it (the prompt shortened from its end) and the summary says how many tokens were cut. Spans
    carry the classes ``ftkit-tok trained`` / ``ftkit-tok masked`` (and ``eos``)."""
    full = len(encode_row(tokenizer, prompt, answer, mask_prompt)[0])
    if max_seq_length:
        row = encode_rows(tokenizer, None if prompt is None else [prompt], [answer], max_seq_length, mask_prompt)
        ids, labels = row.examples[0]["input_ids"], row.examples[0]["labels"]
    else:
        ids, labels = encode_row(tokenizer, prompt, answer, mask_prompt)
    eos = tokenizer.eos_token_id
    spans, n_trained = [], 0
    for start, end, text in _pieces(tokenizer, ids):
        trained = any(labels[i] != IGNORE and i > 0 for i in range(start, end))
        n_trained += sum(1 for i in range(start, end) if labels[i] != IGNORE and i > 0)
        is_eos = end == len(ids) and ids[-1] == eos
        why = "trained" if trained else ("first token, never a target" if start == 0 else "masked")
        title = f"id {' '.join(map(str, ids[start:end]))}: {why}" + (" (EOS)" if is_eos else "")
        style = f"background:{TRAINED if trained else MASKED};box-shadow:inset -1px 0 #fff"
        style += ";outline:2px solid #2e7d32" if is_eos else ""
        cls = "ftkit-tok " + ("trained" if trained else "masked") + (" eos" if is_eos else "")
        spans.append(f'<span class="{cls}" title="{html.escape(title)}" style="{style}">{_show(text)}</span>')
    eos_text = html.escape(tokenizer.eos_token or "EOS")
    eos_state = "trained" if labels[-1] != IGNORE else "NOT trained"
    cut = (
        f"; cut from {full} to max_seq_length={max_seq_length} as the job cuts it: the prompt ends early "
        f"(<code>...</code>), {full - len(ids)} tokens are not shown and never trained"
        if full > len(ids)
        else ""
    )
    summary = (
        f"{len(ids)} tokens: <span style='background:{TRAINED}'>&nbsp;{n_trained} trained&nbsp;</span> "
        f"<span style='background:{MASKED}'>&nbsp;{len(ids) - n_trained} not trained&nbsp;</span>; "
        f"mask_prompt_labels={'true' if mask_prompt else 'false'}"
        + (" (the prompt and template header are masked)" if mask_prompt else " (the prompt is trained too)")
        + f"; the EOS token {eos_text} (outlined) is {eos_state}"
        + cut
        + "."
    )
    body = "".join(spans)
    return (
        f"<div class='ftkit-token-view'><div style='margin-bottom:4px'>{summary}</div>"
        f"<div style='font-family:monospace;white-space:pre-wrap;line-height:1.9'>{body}</div></div>"
    )
