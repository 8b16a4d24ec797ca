"""Report the weight of each built chapter and of its explorers (widget state), in KB.

Usage: .venv/bin/python tools/page_weight.py [_build/html]

Columns: the page's HTML; its explorers; their widget state (the frames, embedded in the page);
per explorer; and the static fallback images (``<page>/explorer-<n>*.png`` next to the page,
book/_ext/imckit_online.py), which a browser fetches only when a fallback shows (a failed widget
script, or print): they are not part of the page's HTML.
"""
import json
import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "_build/html")
print(f"{'page':34s} {'page KB':>8s} {'explorers':>9s} {'widget state KB':>16s} {'KB/explorer':>12s}"
      f" {'fallback KB':>12s}")
for page in sorted((root / "book").glob("*.html")):
    html = page.read_text()
    m = re.search(r'<script type="application/vnd.jupyter.widget-state\+json">(.*?)</script>', html, re.S)
    state_kb = len(m.group(1).encode()) / 1024 if m else 0.0
    n = 0
    if m:
        models = json.loads(m.group(1))["state"]
        # one explorer = one outer VBox holding controls and a Stack/Box panel; count Stacks
        # that no other Stack contains
        stacks = {k for k, v in models.items() if v["model_name"] == "StackModel"}
        inner = {c[10:] for k in stacks for c in models[k]["state"].get("children", [])}
        n = len(stacks - inner)
    per = f"{state_kb / n:12.0f}" if n else f"{'-':>12s}"
    fallback_kb = sum(p.stat().st_size for p in page.with_suffix("").glob("explorer-*.png")) / 1024
    print(f"{page.name:34s} {page.stat().st_size / 1024:8.0f} {n:9d} {state_kb:16.0f} {per}"
          f" {fallback_kb:12.0f}")
