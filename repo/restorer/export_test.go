package restorer

// SetAfterPlan runs f between planning (directories, symlinks and special
// files made) and writing files, until the returned func is called.
func SetAfterPlan(f func()) (reset func()) {
	old := afterPlan
	afterPlan = f
	return func() { afterPlan = old }
}
