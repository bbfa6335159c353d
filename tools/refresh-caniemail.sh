#!/bin/sh
# Refresh mailer/data/caniemail.json (what `mailer lint` checks against) from the npm package
# `caniemail`, which ships caniemail.com's data (www.caniemail.com/api/data.json) as JSON.
#
#   tools/refresh-caniemail.sh            the version npm tags `latest`
#   tools/refresh-caniemail.sh 2.0.2      a given version
#
# Needs npm (only `npm view` and `npm pack`: nothing is installed, no package script runs) and
# Python 3. The package is unpacked in a temporary folder, trimmed to what mailer reads (every
# feature and every client, the newest version entry of each platform) and written with one
# feature per line, so a refresh reads as a diff. Then run the tests: `make test`.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/mailer/data/caniemail.json"
python=python3
[ -x "$root/.venv/bin/python" ] && python="$root/.venv/bin/python"

# Named exactly: a bare `npm pack caniemail` picks the newest version whose `engines` field
# suits the local Node, which can be an older release with older data.
version=${1:-$(npm view caniemail dist-tags.latest)}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

(cd "$tmp" && npm pack --silent "caniemail@$version" >/dev/null)
tar -xzf "$tmp"/caniemail-*.tgz -C "$tmp"

"$python" - "$tmp/package" "$out" <<'PY'
import json
import sys
from pathlib import Path

package, out = Path(sys.argv[1]), Path(sys.argv[2])
meta = json.loads((package / "package.json").read_text(encoding="utf-8"))
source = json.loads((package / "data" / "caniemail.json").read_text(encoding="utf-8"))
KEEP = ("slug", "title", "category", "url", "last_test_date", "notes", "notes_by_num")


def newest(versions):
    # caniemail.com lists each platform's versions oldest first; a mix of app versions and
    # test dates ("2019-10", "16.80") sorts wrongly as text, so the order given is the truth.
    last = list(versions)[-1]
    return {last: versions[last]}


features = []
for feature in source["data"]:
    kept = {key: feature.get(key) for key in KEEP}
    kept["stats"] = {
        family: {platform: newest(versions) for platform, versions in platforms.items()}
        for family, platforms in feature["stats"].items()
    }
    features.append(kept)

head = {
    "source": {
        "url": "https://www.caniemail.com/",
        "api": "https://www.caniemail.com/api/data.json",
        "package": f"{meta['name']}@{meta['version']} (npm)",
        "licence": meta.get("license", ""),
        "trimmed": "fields mailer reads; the newest version entry of each platform",
    },
    "api_version": source.get("api_version", ""),
    "last_update_date": source.get("last_update_date", ""),
    "nicenames": source.get("nicenames", {}),
}
lines = json.dumps(head, ensure_ascii=False, indent=1)[:-2]  # open: "data" follows
rows = ",\n".join(json.dumps(f, ensure_ascii=False, separators=(",", ":")) for f in features)
out.write_text(f'{lines},\n "data": [\n{rows}\n ]\n}}\n', encoding="utf-8")
json.loads(out.read_text(encoding="utf-8"))  # still JSON
print(f"{out}: {len(features)} features, {meta['name']}@{meta['version']}, "
      f"data of {head['last_update_date']}, {out.stat().st_size // 1024} KB")
PY
