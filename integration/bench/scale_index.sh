# shellcheck shell=bash
# Sourced by bench.sh (section scale). Defines scale_index.
scale_index() {
	warn "scale_index: not written yet"
	return 1
}
