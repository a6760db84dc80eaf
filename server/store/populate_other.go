//go:build unix && !linux

package store

// mapPopulate: only Linux populates a mapping at once; elsewhere pages fault in as they are read.
const mapPopulate = 0
