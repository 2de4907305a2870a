"""Config Editor: the tree by environment, service and component; schema-aware editing with a diff
preview; history with rollback; secrets masked with an audited reveal; pending approvals."""

from __future__ import annotations

import html
import json
import uuid
from typing import TYPE_CHECKING, Any

import pandas as pd
import panel as pn
from workbench.dashboards.layout import Page, table_data

if TYPE_CHECKING:
    from workbench.client import Workbench
    from workbench.config.store import Config

TREE_COLUMNS = ["service", "component", "key", "kind", "value", "version_id", "updated_by"]
HISTORY_COLUMNS = [
    "version",
    "created_at",
    "service",
    "component",
    "action",
    "old_value",
    "new_value",
    "author",
    "reason",
]


def session_actor(config: Config) -> Config:
    """The configuration acting as the logged-in user, with the request's address and agent."""
    from workbench.config.model import Actor

    user = pn.state.user or "anonymous"
    address = agent = None
    context = pn.state.curdoc.session_context if pn.state.curdoc is not None else None
    request = getattr(context, "request", None) if context is not None else None
    if request is not None:
        address = getattr(request, "remote_ip", None)
        headers = getattr(request, "headers", None) or {}
        agent = headers.get("User-Agent")
    return config.as_actor(Actor(str(user), "user", uuid.uuid4().hex, address, agent))


def _message(kind: str, text: str) -> str:
    colour = {"error": "crimson", "ok": "green", "info": "#555"}[kind]
    return f'<p class="dm-msg dm-msg-{kind}" style="color:{colour}">{html.escape(text)}</p>'


def build(workbench: Workbench) -> list[Any]:  # noqa: PLR0915 - one page, one closure set
    from workbench.config.store import Config, parse_json_value, validate_against
    from workbench.errors import DictaMeshError

    base: Config = workbench.config
    config = session_actor(base)
    environments = config.environments()
    environment = pn.widgets.Select(
        label="Environment",
        options=environments,
        value=environments[0] if environments else None,
        css_classes=["dm-config-env"],
        width=180,
    )
    tree = pn.widgets.Tabulator(
        pd.DataFrame(columns=TREE_COLUMNS),
        disabled=True,
        selectable=1,
        show_index=False,
        groupby=["service", "component"],
        sizing_mode="stretch_width",
        height=320,
        css_classes=["dm-config-tree"],
    )
    key = pn.widgets.TextInput(
        label="Key", placeholder="db.pool_size", css_classes=["dm-config-key"]
    )
    service = pn.widgets.TextInput(
        label="Service", placeholder="(environment level)", css_classes=["dm-config-service"]
    )
    component = pn.widgets.TextInput(
        label="Component", placeholder="(service level)", css_classes=["dm-config-component"]
    )
    value = pn.widgets.TextAreaInput(
        label="Value (JSON)",
        placeholder='42, "text", {"a": 1}',
        height=110,
        css_classes=["dm-config-value"],
    )
    reason = pn.widgets.TextInput(
        label="Reason", placeholder="why this change", css_classes=["dm-config-reason"]
    )
    secret = pn.widgets.Checkbox(label="secret (encrypted)", css_classes=["dm-config-secret"])
    preview = pn.widgets.Button(label="Preview diff", css_classes=["dm-config-preview"], width=130)
    save = pn.widgets.Button(
        label="Save", color="primary", css_classes=["dm-config-save"], width=100
    )
    reveal = pn.widgets.Button(
        label="Reveal secret", color="warning", css_classes=["dm-config-reveal"], width=130
    )
    schema = pn.pane.HTML("", css_classes=["dm-config-schema"], sizing_mode="stretch_width")
    diff = pn.pane.HTML("", css_classes=["dm-config-diff"], sizing_mode="stretch_width")
    message = pn.pane.HTML("", css_classes=["dm-config-message"], sizing_mode="stretch_width")
    explained = pn.pane.HTML("", css_classes=["dm-config-explain"], sizing_mode="stretch_width")
    history = pn.widgets.Tabulator(
        pd.DataFrame(columns=HISTORY_COLUMNS),
        disabled=True,
        selectable=1,
        show_index=False,
        sizing_mode="stretch_width",
        height=240,
        css_classes=["dm-config-history"],
    )
    rollback = pn.widgets.Button(
        label="Roll back to selected version", css_classes=["dm-config-rollback"], width=230
    )
    proposals = pn.widgets.Tabulator(
        pd.DataFrame(),
        disabled=True,
        selectable=1,
        show_index=False,
        sizing_mode="stretch_width",
        height=200,
        css_classes=["dm-config-proposals"],
    )
    approve = pn.widgets.Button(
        label="Approve", color="success", css_classes=["dm-config-approve"], width=100
    )
    reject = pn.widgets.Button(
        label="Reject", color="danger", css_classes=["dm-config-reject"], width=100
    )

    def where() -> dict[str, Any]:
        return {
            "environment": environment.value,
            "service": service.value.strip() or None,
            "component": component.value.strip() or None,
        }

    def refresh_tree(*_events: Any) -> None:
        if not environment.value:
            return
        frame = config.values(environment.value)
        tree.value = (
            table_data(frame.select(TREE_COLUMNS))
            if frame.height
            else pd.DataFrame(columns=TREE_COLUMNS)
        )
        pending = config.proposals(environment=environment.value)
        proposals.value = (
            table_data(
                pending.select("id", "service", "component", "key", "proposed_by", "reason", "diff")
            )
            if pending.height
            else pd.DataFrame(columns=["id", "service", "component", "key", "proposed_by"])
        )

    def show_key(*_events: Any) -> None:
        name = key.value.strip()
        if not name:
            return
        info = config.key_info(name)
        if info is None:
            schema.object = _message("info", f"{name}: a new key (no schema)")
        else:
            parts = [f"<b>{html.escape(info.key)}</b> · {info.kind}"]
            if info.description:
                parts.append(html.escape(info.description))
            if info.owners:
                parts.append("owners " + html.escape(", ".join(info.owners)))
            if info.tags:
                parts.append("tags " + html.escape(", ".join(info.tags)))
            body = json.dumps(info.schema, indent=2) if info.schema else "(no schema)"
            schema.object = (
                f'<div class="dm-schema">{" · ".join(parts)}<pre>{html.escape(body)}</pre></div>'
            )
            secret.value = info.is_secret
        try:
            explanation = config.explain(name, **where())
            explained.object = explanation._repr_html_()
        except DictaMeshError as exc:
            explained.object = _message("error", str(exc))
        frame = config.history(name, environment=environment.value, limit=50)
        history.value = (
            table_data(frame.select(HISTORY_COLUMNS))
            if frame.height
            else (pd.DataFrame(columns=HISTORY_COLUMNS))
        )

    def parsed() -> Any:
        name = key.value.strip()
        info = config.key_info(name)
        is_secret = secret.value or bool(info and info.is_secret)
        data = parse_json_value(name, value.value, secret=is_secret)
        from workbench.config.model import Scope

        w = where()
        validate_against(
            name,
            info.schema if info else None,
            data,
            Scope(w["environment"], w["service"] or "", w["component"] or ""),
            secret=is_secret,
        )
        return data, is_secret

    def do_preview(_event: Any) -> None:
        name = key.value.strip()
        try:
            data, is_secret = parsed()
            explanation = config.explain(name, **where())
            here = explanation.levels[0]
            old = here.value if here.found else None
            text = Config._diff_text(
                name,
                explanation.scope,
                old,
                data,
                secret=is_secret,
                deleting=False,
                existed=here.found,
            )
            diff.object = f"<pre class='dm-diff'>{html.escape(text or '(no change)')}</pre>"
            message.object = _message("info", "valid: review the diff, then save")
        except DictaMeshError as exc:
            diff.object = ""
            message.object = _message("error", str(exc))

    def do_save(_event: Any) -> None:
        name = key.value.strip()
        try:
            data, is_secret = parsed()
            result = config.set(
                name, data, reason=reason.value, secret=True if is_secret else None, **where()
            )
        except DictaMeshError as exc:
            message.object = _message("error", str(exc))
            return
        from workbench.config.model import Proposal

        if isinstance(result, Proposal):
            message.object = _message("ok", f"proposed #{result.id}; it applies once approved")
        else:
            message.object = _message("ok", f"saved as version #{result.id}")
        diff.object = ""
        refresh_tree()
        show_key()

    def do_reveal(_event: Any) -> None:
        name = key.value.strip()
        try:
            shown = session_actor(base).reveal(name, **where())
        except DictaMeshError as exc:
            message.object = _message("error", str(exc))
            return
        message.object = (
            _message("ok", "revealed (this read is audited):")
            + f"<pre class='dm-revealed'>{html.escape(json.dumps(shown))}</pre>"
        )

    def do_rollback(_event: Any) -> None:
        if not history.selection:
            message.object = _message("error", "select a version in the history first")
            return
        version = int(history.value.iloc[history.selection[0]]["version"])
        try:
            result = config.rollback(
                key.value.strip(),
                to_version=version,
                reason=reason.value or f"rollback to #{version}",
            )
        except DictaMeshError as exc:
            message.object = _message("error", str(exc))
            return
        message.object = _message("ok", f"rolled back: {result!r}")
        refresh_tree()
        show_key()

    def review(decision: str) -> None:
        if not proposals.selection:
            message.object = _message("error", "select a pending change first")
            return
        proposal_id = int(proposals.value.iloc[proposals.selection[0]]["id"])
        try:
            reviewer = session_actor(base)
            result = (
                reviewer.approve(proposal_id)
                if decision == "approve"
                else reviewer.reject(proposal_id)
            )
        except DictaMeshError as exc:
            message.object = _message("error", str(exc))
            return
        message.object = _message("ok", f"proposal #{result.id} {result.status}")
        refresh_tree()

    def select_row(event: Any) -> None:
        if not event.new:
            return
        row = tree.value.iloc[event.new[0]]
        key.value = str(row["key"])
        service.value = str(row["service"] or "")
        component.value = str(row["component"] or "")
        value.value = "" if row["kind"] == "secret" else str(row["value"])
        show_key()

    environment.param.watch(refresh_tree, "value")
    environment.param.watch(show_key, "value")
    tree.param.watch(select_row, "selection")
    key.param.watch(show_key, "value")
    preview.on_click(do_preview)
    save.on_click(do_save)
    reveal.on_click(do_reveal)
    rollback.on_click(do_rollback)
    approve.on_click(lambda _e: review("approve"))
    reject.on_click(lambda _e: review("reject"))
    refresh_tree()

    editor = pn.Column(
        pn.Row(key, service, component, sizing_mode="stretch_width"),
        value,
        pn.Row(reason, secret, sizing_mode="stretch_width"),
        pn.Row(preview, save, reveal),
        message,
        diff,
        schema,
        explained,
        sizing_mode="stretch_width",
    )
    return [
        pn.Row(environment),
        pn.pane.Markdown("### Values (secrets masked)"),
        tree,
        pn.pane.Markdown("### Edit"),
        editor,
        pn.pane.Markdown("### History"),
        history,
        rollback,
        pn.pane.Markdown("### Pending approvals"),
        proposals,
        pn.Row(approve, reject),
    ]


PAGE = Page(
    slug="config",
    title="Config Editor",
    build=build,
    order=30,
    description="Configuration tree, validated edits, history, secrets and approvals",
)
