package restorer

// SetAfterPlan runs f between planning (directories, symlinks and special
// files made) and writing files, until the returned func is called.
func SetAfterPlan(f func()) (reset func()) {
	old := afterPlan
	afterPlan = f
	return func() { afterPlan = old }
}

// SetMaxOpen sets how many partly written files stay open, until the
// returned func is called.
func SetMaxOpen(n int64) (reset func()) {
	old := maxOpen
	maxOpen = n
	return func() { maxOpen = old }
}

// SetAfterPark runs f with a file's path below the target each time the
// file is closed to wait for more blobs, until the returned func is called.
func SetAfterPark(f func(rel string)) (reset func()) {
	old := afterPark
	afterPark = f
	return func() { afterPark = old }
}
