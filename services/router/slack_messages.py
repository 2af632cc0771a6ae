"""The Slack incoming-webhook message of a notification to a rep (`slack_offer`): Block Kit,
with the lead, its score and why, the countdown and the buttons."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.router.schemas import OfferNotice


def slack_offer(notice: OfferNotice, now: datetime) -> dict[str, Any]:
    """A Slack incoming-webhook message: the lead, its score and why, the countdown, a button."""
    from services.router.schemas import countdown

    lead = notice.lead
    who = " · ".join(part for part in (lead.name, lead.company, lead.country) if part)
    headline = {
        "offer": "New lead for you", "reminder": "Reminder: lead waiting for you",
        "escalation": "Lead escalated to your team's queue",
        "contact_overdue": "Lead accepted but not contacted in time",
        "handover_waiting": "Qualified lead waiting: no AE can take it yet",
    }.get(notice.kind, "Lead update")
    reasons = "\n".join(f"• {reason}" for reason in notice.why[:5]) or "• (no breakdown)"
    buttons = [(label, url) for label, url in (("Accept", notice.accept_url),
                                               ("Claim", notice.claim_url)) if url]
    elements = [{"type": "button", "style": "primary", "url": url,
                 "text": {"type": "plain_text", "text": label}} for label, url in buttons]
    actions = [{"type": "actions", "elements": elements}] if elements else []
    text = (f"{headline}: {who or 'a lead'} — {notice.temperature} {notice.score:g} pts, "
            f"accept within {countdown(notice.deadline_at, now)}")
    return {
        "text": text,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": headline}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": f"*Lead*\n{who or '—'}"},
                {"type": "mrkdwn", "text": f"*Score*\n{notice.score:g} ({notice.temperature})"},
                {"type": "mrkdwn", "text": f"*Source*\n{lead.source or '—'}"},
                {"type": "mrkdwn",
                 "text": f"*Accept within*\n{countdown(notice.deadline_at, now)}"},
            ]},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*Why*\n{reasons}"}},
            *([{"type": "section", "text": {"type": "mrkdwn",
                                            "text": f"*Why you*\n{notice.why_you}"}}]
              if notice.why_you else []),
            *actions,
        ],
    }
