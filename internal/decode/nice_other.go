//go:build !unix

package decode

// lowerPriority does nothing where processes have no nice value.
func lowerPriority(int) {}
