# shellcheck shell=bash
# Sourced by bench.sh (section scale). Defines scale_tree.
scale_tree() {
	warn "scale_tree: not written yet"
	return 1
}
