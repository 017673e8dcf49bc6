// Package check holds what every test program here shares: the records the tests produce,
// failing with a clear message, and printing the one JSON result the pytest side parses.
package check

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
)

// Record is one record as a client produced or consumed it.
type Record struct {
	Partition int32  `json:"p"`
	Offset    int64  `json:"o"`
	Key       string `json:"k"`
	Value     string `json:"v"`
}

// Key and Value of the i-th record a test produces with `tag`; the pytest side computes the
// same ones.
func Key(i int) string               { return fmt.Sprintf("k-%d", i%17) }
func Value(tag string, i int) string { return fmt.Sprintf("%s-%06d", tag, i) }

// Fail prints the reason to stderr and exits 1.
func Fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	os.Exit(1)
}

// FailOn fails when err is not nil, naming the step.
func FailOn(err error, step string) {
	if err != nil {
		Fail("%s: %v", step, err)
	}
}

// Emit prints v as the program's one line of JSON output.
func Emit(v any) {
	out, err := json.Marshal(v)
	FailOn(err, "encoding the result")
	fmt.Println(string(out))
}

// Sorted orders records by partition, then offset.
func Sorted(rs []Record) []Record {
	sort.Slice(rs, func(i, j int) bool {
		if rs[i].Partition != rs[j].Partition {
			return rs[i].Partition < rs[j].Partition
		}
		return rs[i].Offset < rs[j].Offset
	})
	return rs
}

// Distinct fails if a record (partition, offset) was seen twice.
func Distinct(rs []Record, what string) {
	seen := map[[2]int64]bool{}
	for _, r := range rs {
		k := [2]int64{int64(r.Partition), r.Offset}
		if seen[k] {
			Fail("%s: partition %d offset %d delivered twice", what, r.Partition, r.Offset)
		}
		seen[k] = true
	}
}
