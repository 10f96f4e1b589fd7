"""``deploy/prometheus/alerts.yml``: rules Prometheus accepts (``promtool check rules``), alerts
that fire on the series they are meant for (``promtool test rules alerts_test.yml``), and only
metric names and labels that ``service/metrics.py`` defines, so that renaming a metric breaks
this test instead of silently disarming an alert."""

import re
import shutil
import subprocess

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from support import REPO

from service import metrics

RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = RULES.with_name("alerts_test.yml")
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian's package prometheus ships it; "
                             ".ci/run installs it where apt-get works)")
SCRAPE_LABELS = {"job", "instance"}  # added by Prometheus, not by the service
_NOT_RECORDED = r"(?<![\w:])"  # model:imgclf_x:rate5m is a recording rule, not a metric
_SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exposed_series() -> dict[str, set[str]]:
    """Every sample name the service exposes -> its label names (service/metrics.py)."""
    series: dict[str, set[str]] = {}
    for metric in vars(metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        [family] = metric.describe()
        for suffix in _SAMPLE_SUFFIXES[family.type]:
            labels = set(metric._labelnames) | ({"le"} if suffix == "_bucket" else set())
            series[family.name + suffix] = labels
    return series


def rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_metric_and_label_an_expression_names_is_one_the_service_exposes():
    exposed = exposed_series()
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    assert "imgclf_prediction_drift_psi" in exposed and "imgclf_http_requests_total" in exposed
    for rule in rules():
        expr = rule["expr"]
        name = rule.get("alert") or rule["record"]
        names = set(re.findall(rf"{_NOT_RECORDED}imgclf_\w+\b(?!:)", expr))
        unknown = names - exposed.keys()
        assert not unknown, f"{name} names metrics service/metrics.py does not define: {unknown}"
        for metric, matchers in re.findall(rf"{_NOT_RECORDED}(imgclf_\w+)\s*\{{([^}}]*)\}}", expr):
            used = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
            assert used <= exposed[metric] | SCRAPE_LABELS, (name, metric, used - exposed[metric])
        references = set(re.findall(r"\b[a-z_]+:[a-z0-9_:]+", expr))
        assert references <= recorded, f"{name} uses rules this file does not record: {references - recorded}"
        assert names or references, f"{name} watches none of the service's metrics"


def test_every_alert_has_a_duration_a_severity_and_words_for_the_person_paged():
    alerts = [rule for rule in rules() if "alert" in rule]
    assert {"ImgclfPredictionDrift", "ImgclfPredictionDriftCritical", "ImgclfConfidenceCollapse",
            "ImgclfServerErrors", "ImgclfOverloaded", "ImgclfGoldenSetRefusal",
            "ImgclfFeedbackDiskFull"} <= {rule["alert"] for rule in alerts}
    for rule in alerts:
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and len(rule["annotations"]["description"]) > 40


def test_the_status_and_outcome_values_the_alerts_match_are_ones_the_service_writes():
    """Label values are strings the middleware and the feedback route write: an alert on a value
    nobody writes never fires."""
    text = RULES.read_text()
    assert 'outcome="disk_full"' in text and "disk_full" in metrics.FEEDBACK._documentation
    assert 'status="503"' in text  # the middleware writes str(status)


@needs_promtool
def test_promtool_accepts_the_rules():
    result = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout + result.stderr


@needs_promtool
def test_the_alerts_fire_on_synthetic_series():
    """alerts_test.yml: drift fires after 15 minutes above 0.2 (and 0.5), a NaN gauge never,
    a first golden-set refusal fires, confidence against yesterday and absolute, 5xx, 503 and
    a full feedback disk."""
    assert "ImgclfPredictionDrift" in RULE_TESTS.read_text()
    result = subprocess.run([PROMTOOL, "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
