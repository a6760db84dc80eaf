package store

import "syscall"

// mapPopulate makes checksumFile's mappings whole at once (one call) rather than page fault by
// page fault.
const mapPopulate = syscall.MAP_POPULATE
