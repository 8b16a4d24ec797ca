#!/usr/bin/env bash
# Fetch the JavaScript the built book needs to work with no network (MathJax, RequireJS, the
# ipywidgets HTML manager) from the npm registry into book/_static/vendor/ (git-ignored).
# Versions are pinned here, in one place. Run by `make book`; re-runs are no-ops.
set -euo pipefail
cd "$(dirname "$0")/.."
MATHJAX=mathjax@3.2.2
REQUIREJS=requirejs@2.3.7
HTMLMANAGER=@jupyter-widgets/html-manager@1.0.15   # pairs with ipywidgets 8.1.x
dest=book/_static/vendor
stamp="$dest/.versions"
want="$MATHJAX $REQUIREJS $HTMLMANAGER fonts-in-both-places"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
command -v npm >/dev/null || { echo "fetch_vendor: npm is needed to fetch the book's JavaScript (apt-get install npm)" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$MATHJAX" "$REQUIREJS" "$HTMLMANAGER" >/dev/null)
rm -rf "$dest"; mkdir -p "$dest/mathjax" "$dest/require" "$dest/html-manager"
for t in "$tmp"/*.tgz; do mkdir -p "$tmp/x" && tar -xzf "$t" -C "$tmp/x" && mv "$tmp/x/package" "$tmp/$(basename "$t" .tgz)"; done
# MathJax: the es5 bundle with its fonts and lazily loaded extensions, minus the speech-rule maps.
cp -r "$tmp"/mathjax-*/es5/. "$dest/mathjax/"
rm -rf "$dest/mathjax/sre/mathmaps" "$dest/mathjax/output/svg" "$dest/mathjax/node-main.js"
find "$dest/mathjax" -maxdepth 1 -name '*.js' ! -name 'tex-chtml.js' ! -name 'tex-mml-chtml.js' ! -name 'loader.js' ! -name 'startup.js' ! -name 'core.js' -delete
cp "$tmp"/requirejs-*/require.js "$dest/require/require.js"
cp "$tmp"/jupyter-widgets-html-manager-*/dist/embed-amd.js "$dest/html-manager/embed-amd.js"
# The manager loads its icon fonts (Font Awesome) relative to the page, from two places: its
# own stylesheet asks <page dir>/@jupyter-widgets/html-manager/dist/<hash>.<ext> on every page
# with a widget, and the controls' stylesheet <page dir>/@jupyter-widgets/<hash>.<ext> when a
# widget shows an icon glyph. The chapters live in book/, so the fonts go to both places there
# (copied into the build via html_extra_path), in every format the bundle names (browsers fall
# back from woff2 to woff to ttf).
for fonts in "$dest/extra/book/@jupyter-widgets" "$dest/extra/book/@jupyter-widgets/html-manager/dist"; do
  mkdir -p "$fonts"
  for f in "$tmp"/jupyter-widgets-html-manager-*/dist/*; do
    case "$f" in *.woff|*.woff2|*.ttf|*.eot|*.svg) cp "$f" "$fonts/";; esac
  done
done
echo "$want" > "$stamp"
du -sh "$dest" | sed 's/^/fetch_vendor: /'
