"""kopf's diff base is kept for studies only (kubetune.handlers.StudyDiffBase): the other
kinds have no handler that reads it, and building it deep-copies every event's object."""

from __future__ import annotations

import kopf

from kubetune.handlers import StudyDiffBase
from kubetune.spec import api


def test_only_studies_keep_a_diff_base() -> None:
    storage = StudyDiffBase(prefix=api.GROUP, key="last-handled-configuration")
    pod = kopf.Body({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}})
    assert storage.build(body=pod) == {}
    assert storage.fetch(body=pod) == {}
    study = kopf.Body(
        {
            "apiVersion": api.API_VERSION,
            "kind": api.STUDY_KIND,
            "metadata": {"name": "s"},
            "spec": {"budget": {"maxTrials": 3}},
        }
    )
    assert storage.build(body=study)["spec"] == {"budget": {"maxTrials": 3}}
