package embedded

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
)

// DamagedError says that the database file cannot be used as it is. Its
// message is one line that names the file and what to do.
type DamagedError struct {
	// Path is the database file.
	Path string
	// Err is what was found wrong with it.
	Err error
}

// Error names the file, what is wrong with it and what to do.
func (e *DamagedError) Error() string {
	return fmt.Sprintf("store file %s is damaged (%v): restore it from a backup, or move it aside to start with an empty registry (agents register their containers again)", e.Path, e.Err)
}

// Unwrap gives the fault found in the file.
func (e *DamagedError) Unwrap() error { return e.Err }

// verify checks the database file at path before the store uses it, since
// bbolt trusts its file and panics, or faults on memory past the end of a
// truncated file, when the file is damaged. It opens the file read-only,
// checks that it is as long as its own header says, and runs bbolt's
// consistency check (Tx.Check, which reads every page: about the time of
// reading the file once). A missing file is fine (Open creates it). The
// errors it returns are bbolt's, or say what is wrong.
func verify(path string) (err error) {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Size() == 0 {
		// bbolt writes its header as it creates a file: an empty one was
		// cut short, and bbolt would silently start it afresh.
		return errors.New("the file is empty: truncated?")
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer guard(&err)
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
	if err != nil {
		return err
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		if need := tx.Size(); need > st.Size() {
			return fmt.Errorf("truncated: %d bytes, its header says %d", st.Size(), need)
		}
		var first error
		problems := 0
		for err := range tx.Check() {
			if first == nil {
				first = err
			}
			problems++
		}
		if problems > 1 {
			return fmt.Errorf("%w, and %d more problems", first, problems-1)
		}
		return first
	})
}
