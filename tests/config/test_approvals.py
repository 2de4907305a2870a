"""Environments that require review: proposed, approved or rejected, then applied."""

from __future__ import annotations

import pytest

from workbench.config import (
    Config,
    ConfigVersion,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    Proposal,
)

pytestmark = pytest.mark.stack


def test_change_is_proposed_then_approved_and_applied(
    config: Config, admin: Config, approval_env: str, ns: str
) -> None:
    key = f"{ns}.rate_limit"
    author = config.as_actor("dev-alice", "user")
    reviewer = config.as_actor("lead-bob", "user")
    admin.grant("lead-bob", "approve", environments=approval_env)

    proposal = author.set(key, 500, environment=approval_env, reason="traffic spike")
    assert isinstance(proposal, Proposal) and proposal.status == "proposed"
    assert "+500" in proposal.diff
    assert config.get(key, environment=approval_env, default=None) is None, "not applied yet"
    pending = config.proposals(environment=approval_env)
    assert pending["id"].to_list() == [proposal.id]

    with pytest.raises(PermissionDeniedError, match="cannot also review"):
        config.as_actor("dev-alice").approve(proposal.id)
    with pytest.raises(PermissionDeniedError, match="may not review"):
        config.as_actor("intern").approve(proposal.id)

    done = reviewer.approve(proposal.id, comment="ok")
    assert done.status == "applied" and done.reviewed_by == "lead-bob"
    assert config.get(key, environment=approval_env) == 500
    version = config.version(done.applied_version_id or 0)
    assert version.author == "dev-alice" and version.reason == "traffic spike"
    actions = config.audit(key=key)["action"].to_list()
    assert actions[:3] == ["set", "approve", "propose"]
    with pytest.raises(ConflictError, match="already applied"):
        reviewer.reject(proposal.id)


def test_rejected_proposal_is_never_applied(
    config: Config, admin: Config, approval_env: str, ns: str
) -> None:
    key = f"{ns}.dangerous"
    proposal = config.as_actor("dev-carol").set(key, True, environment=approval_env)
    assert isinstance(proposal, Proposal)
    rejected = admin.reject(proposal.id, comment="no")
    assert rejected.status == "rejected"
    assert config.get(key, environment=approval_env, default="unset") == "unset"
    with pytest.raises(NotFoundError):
        admin.approve(999_999_999)


def test_approve_without_apply_then_apply_and_stale_proposals(
    config: Config, admin: Config, approval_env: str, ns: str
) -> None:
    key = f"{ns}.workers"
    first = config.as_actor("dev-dan").set(key, 1, environment=approval_env)
    second = config.as_actor("dev-dan").set(key, 2, environment=approval_env)
    assert isinstance(first, Proposal) and isinstance(second, Proposal)
    approved = admin.approve(first.id, apply=False)
    assert approved.status == "approved"
    applied = admin.apply_proposal(first.id)
    assert applied.status == "applied"
    with pytest.raises(ConflictError, match="changed since proposal"):
        admin.approve(second.id)
    assert config.get(key, environment=approval_env) == 1


def test_rollback_in_an_approval_environment_is_proposed(
    config: Config, admin: Config, approval_env: str, ns: str
) -> None:
    key = f"{ns}.mode"
    proposed = config.as_actor("dev-erin").set(key, "a", environment=approval_env)
    assert isinstance(proposed, Proposal)
    v1 = config.version(admin.approve(proposed.id).applied_version_id or 0)
    second = config.as_actor("dev-erin").set(key, "b", environment=approval_env)
    admin.approve(second.id)
    back = config.as_actor("dev-erin").rollback(key, to_version=v1.id)
    assert isinstance(back, Proposal)
    admin.approve(back.id)
    assert config.get(key, environment=approval_env) == "a"
    latest = config.history(key)["action"].to_list()[0]
    assert latest == "rollback"
    assert isinstance(config.set(key, "c", environment="dev"), ConfigVersion)
