"""Promotion by model-tag pinning, with an append-only history and rollback.

The pin file holds one exact tag; `bentoml build` bakes that tag into the Bento. Every change of
the pin is appended to the promotion log as one JSON line: who, when, from, to, why.
"""

from __future__ import annotations

import getpass
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from model_store import store
from model_store.errors import PromotionError


@dataclass(frozen=True)
class PromotionRecord:
    time: str
    user: str
    # "promote", "rollback"; "decline" (a retrained challenger kept out, the pin unchanged);
    # "challenger" / "unpin-challenger" (the challenger pin file changed)
    action: str
    from_tag: str | None
    to_tag: str
    reason: str
    forced: bool = False
    evidence: dict | None = None  # the figures behind a retraining decision


def current(pin_file: Path) -> str | None:
    if not pin_file.is_file():
        return None
    return pin_file.read_text().strip() or None


def history(log_file: Path) -> list[PromotionRecord]:
    if not log_file.is_file():
        return []
    return [
        PromotionRecord(**json.loads(line))
        for line in log_file.read_text().splitlines()
        if line.strip()
    ]


def promotion_of(tag: str, log_file: Path) -> dict | None:
    """The latest record that pinned `tag`, if this machine's promotion log has one."""
    records = [
        asdict(r)
        for r in history(Path(log_file))
        if r.to_tag == tag and r.action in ("promote", "rollback")
    ]
    return records[-1] if records else None


def _write_pin(pin_file: Path, tag: str) -> None:
    pin_file.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=pin_file.parent, delete=False) as handle:
        handle.write(tag + "\n")
    os.replace(handle.name, pin_file)


def _record(log_file: Path, record: PromotionRecord) -> PromotionRecord:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a") as handle:
        handle.write(json.dumps(asdict(record)) + "\n")
    return record


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _pin(
    pin_file: Path,
    log_file: Path,
    action: str,
    tag: str,
    reason: str,
    forced: bool,
    evidence: dict | None = None,
) -> PromotionRecord:
    stored = store.get(tag)
    store.verify(stored)
    record = PromotionRecord(
        time=_now(),
        user=getpass.getuser(),
        action=action,
        from_tag=current(pin_file),
        to_tag=stored.tag,
        reason=reason,
        forced=forced,
        evidence=evidence,
    )
    _write_pin(pin_file, stored.tag)
    return _record(log_file, record)


def promote(
    tag: str,
    *,
    pin_file: Path,
    log_file: Path,
    force: bool = False,
    reason: str = "",
    evidence: dict | None = None,
    challenger_pin_file: Path | None = None,
) -> PromotionRecord:
    """Pin an exact, intact tag. A model that failed its gate needs `force`, which is logged;
    `evidence` (a comparison) is logged with it. Promoting the pinned challenger unpins it."""
    stored = store.get(tag)
    if stored.tag == current(pin_file):
        raise PromotionError(f"{stored.tag} is already the promoted model")
    if not stored.gate_passed and not force:
        raise PromotionError(
            f"{stored.tag} failed its evaluation gate; promote it with --force if you must"
        )
    record = _pin(pin_file, log_file, "promote", stored.tag, reason or "promoted", force, evidence)
    if challenger_pin_file is not None and current(challenger_pin_file) == stored.tag:
        challenger_pin_file.unlink()  # the challenger is the champion now
    return record


def decline(
    challenger: str, *, pin_file: Path, log_file: Path, reason: str, evidence: dict
) -> PromotionRecord:
    """Log a decision not to promote a challenger, with its figures; the pin is unchanged."""
    return _record(
        log_file,
        PromotionRecord(
            time=_now(),
            user=getpass.getuser(),
            action="decline",
            from_tag=current(pin_file),
            to_tag=challenger,
            reason=reason,
            evidence=evidence,
        ),
    )


def promoted_stack(log_file: Path) -> list[str]:
    """The tags promoted and not rolled back, oldest first: the last one is pinned."""
    stack: list[str] = []
    for record in history(log_file):
        if record.action == "promote":
            stack.append(record.to_tag)
        elif record.action == "rollback" and stack:
            stack.pop()
    return stack


def rollback(*, pin_file: Path, log_file: Path, reason: str = "") -> PromotionRecord:
    """Re-pin the tag that was promoted before the current one."""
    stack = promoted_stack(log_file)
    if len(stack) < 2:
        raise PromotionError("no earlier promoted model to roll back to")
    if stack[-1] != current(pin_file):
        raise PromotionError(
            f"the pin file ({current(pin_file)}) disagrees with the promotion log ({stack[-1]}): "
            "promote the intended tag explicitly"
        )
    return _pin(pin_file, log_file, "rollback", stack[-2], reason or "rolled back", forced=False)


def pin_challenger(
    tag: str | None, *, challenger_pin_file: Path, pin_file: Path, log_file: Path, reason: str = ""
) -> PromotionRecord:
    """Pin an intact tag as the challenger the next Bento serves beside the champion (shadow or
    canary, by the settings); None unpins it. Logged like a promotion."""
    if tag is None:
        previous = current(challenger_pin_file)
        if previous is None:
            raise PromotionError("no challenger is pinned")
        challenger_pin_file.unlink()
        return _record(
            log_file,
            PromotionRecord(
                _now(), getpass.getuser(), "unpin-challenger", previous, previous,
                reason or "challenger unpinned",
            ),
        )  # fmt: skip
    stored = store.get(tag)
    store.verify(stored)
    if stored.tag == current(pin_file):
        raise PromotionError(f"{stored.tag} is the promoted champion, not a challenger")
    record = PromotionRecord(
        _now(), getpass.getuser(), "challenger", current(challenger_pin_file), stored.tag,
        reason or "pinned as challenger",
    )  # fmt: skip
    _write_pin(challenger_pin_file, stored.tag)
    return _record(log_file, record)
