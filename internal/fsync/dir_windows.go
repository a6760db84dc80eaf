package fsync

// dirSyncs is false on Windows: a directory cannot be flushed there. os.Open gives a directory
// handle without GENERIC_WRITE, and FlushFileBuffers on it fails with "Access is denied", so
// syncing it made every new segment of the FS store, and the opening of a client spool, fail
// (PutMedia answered ARCHIVAL_ERROR to every fragment). NTFS journals directory entries itself;
// SQLite, LevelDB and bbolt skip the directory sync on Windows too.
const dirSyncs = false
