#!/usr/bin/env python3
"""Write syncgov's Prometheus rule file from the PrometheusRule manifest.

k8s/base/prometheusrule.yaml is the one source of the alert rules. This
script writes its ``.spec`` (``groups: [...]``) as a plain Prometheus rule
file, ``syncgov.rules.yml``, into ``--out``, so that promtool and a local
Prometheus read the very same rules. With ``--with-tests`` it copies
``alerts.test.yml`` beside it (promtool resolves ``rule_files`` relative to the
test file); with ``--with-config`` it copies ``prometheus.yml`` too.

    .venv/bin/python ops/prometheus/extract_rules.py --out /tmp/syncgov-prom --with-tests
    promtool check rules /tmp/syncgov-prom/syncgov.rules.yml
    promtool test rules /tmp/syncgov-prom/alerts.test.yml

Needs PyYAML (in the app venv via .ci/install-k8s-tools.sh).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
RULE_MANIFEST = ROOT / "k8s" / "base" / "prometheusrule.yaml"
RULES_NAME = "syncgov.rules.yml"


def load_groups(manifest: Path = RULE_MANIFEST) -> list[dict]:
    """The rule groups of the PrometheusRule in ``manifest``."""
    docs = [d for d in yaml.safe_load_all(manifest.read_text(encoding="utf-8")) if d]
    rules = [d for d in docs if d.get("kind") == "PrometheusRule"]
    if len(rules) != 1:
        raise SystemExit(f"{manifest}: expected exactly one PrometheusRule, found {len(rules)}")
    groups = rules[0].get("spec", {}).get("groups")
    if not groups:
        raise SystemExit(f"{manifest}: PrometheusRule has no spec.groups")
    return groups


def write_rules(out_dir: Path, manifest: Path = RULE_MANIFEST) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / RULES_NAME
    header = f"# GENERATED from {manifest.name} (.spec) by ops/prometheus/extract_rules.py; do not edit.\n"
    body = yaml.safe_dump({"groups": load_groups(manifest)}, sort_keys=False, allow_unicode=True)
    target.write_text(header + body, encoding="utf-8")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write syncgov.rules.yml into")
    parser.add_argument("--manifest", type=Path, default=RULE_MANIFEST, help="PrometheusRule manifest")
    parser.add_argument("--with-tests", action="store_true", help="also copy alerts.test.yml")
    parser.add_argument("--with-config", action="store_true", help="also copy prometheus.yml")
    args = parser.parse_args(argv)
    target = write_rules(args.out, args.manifest)
    if args.with_tests:
        shutil.copy2(HERE / "alerts.test.yml", args.out / "alerts.test.yml")
    if args.with_config:
        shutil.copy2(HERE / "prometheus.yml", args.out / "prometheus.yml")
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
