#!/bin/sh
# Regenerate nft's own outputs for the corpus, to compare flowpath against when nft is not available.
# For each X.nft that nft 1.0.6 loads: X.nft.list (nft list ruleset) and X.nft.json (nft -j list ruleset).
# For each invalid/X.nft: X.nft.err (the errors of a real load; nft -c misses kernel-side ones). Runs in a private network namespace, as root.
# nft runs with -I set to the file's folder, where flowpath looks for a plain include name too.
set -eu
cd "$(dirname "$0")"
ns="fpnft_regen_$$"
ip netns add "$ns"
trap 'ip netns del "$ns"' EXIT
for f in *.nft; do
	ip netns exec "$ns" nft flush ruleset
	if ip netns exec "$ns" nft -I . -f "$f" 2>/dev/null; then
		ip netns exec "$ns" nft list ruleset >"$f.list"
		ip netns exec "$ns" nft -j list ruleset >"$f.json"
	else
		# flowtables need kernel support this machine lacks: no stored output
		rm -f "$f.list" "$f.json"
		echo "not loadable by nft here: $f" >&2
	fi
done
for f in invalid/*.nft; do
	ip netns exec "$ns" nft flush ruleset
	if ip netns exec "$ns" nft -I invalid -f "$f" 2>"$f.err"; then
		echo "invalid file accepted by nft: $f" >&2
		exit 1
	fi
done
