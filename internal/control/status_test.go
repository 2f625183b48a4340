package control

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// snakeCase is the form of every JSON name of the API.
var snakeCase = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// jsonLeaves walks the JSON types reachable from t and returns the dotted
// JSON names of their leaves ("store.disk_bytes", "paths[].rtt_ms"); a
// PrefetchJob is a leaf but under the prefix "job". It
// reports, through bad, every field without a snake_case JSON name and
// every type reachable that is not of this package (time.Time aside).
func jsonLeaves(t reflect.Type, prefix string, bad func(string)) []string {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		if t.Kind() == reflect.Slice && t.Elem().Kind() != reflect.String {
			prefix += "[]"
		}
		t = t.Elem()
	}
	if t == reflect.TypeFor[PrefetchJob]() && prefix != "job" {
		return []string{prefix} // documented once, as job.*
	}
	if t.Kind() != reflect.Struct || t == reflect.TypeFor[time.Time]() {
		if t.PkgPath() != "" && t.PkgPath() != reflect.TypeFor[Status]().PkgPath() && t != reflect.TypeFor[time.Time]() {
			bad(prefix + ": type " + t.String() + " of another package")
		}
		return []string{prefix}
	}
	if t.PkgPath() != reflect.TypeFor[Status]().PkgPath() {
		bad(prefix + ": type " + t.String() + " of another package")
		return nil
	}
	var leaves []string
	for i := range t.NumField() {
		f := t.Field(i)
		name := prefix + "." + f.Name
		if f.Anonymous {
			bad(name + ": embedded")
			continue
		}
		if !f.IsExported() {
			continue
		}
		tag, ok := f.Tag.Lookup("json")
		jsonName, opts, _ := strings.Cut(tag, ",")
		if !ok || !snakeCase.MatchString(jsonName) {
			bad(name + ": JSON name " + strings.TrimSpace(tag) + " is not snake_case")
			continue
		}
		if opts != "" && opts != "omitempty" && opts != "omitzero" {
			bad(name + ": JSON options " + opts)
		}
		p := jsonName
		if prefix != "" {
			p = prefix + "." + jsonName
		}
		leaves = append(leaves, jsonLeaves(f.Type, p, bad)...)
	}
	return leaves
}

// apiLeaves returns the documented JSON fields: Status's and PrefetchJob's
// (as the prefetch endpoints return it, "job.").
func apiLeaves(t *testing.T) []string {
	bad := func(s string) { t.Error(s) }
	return append(jsonLeaves(reflect.TypeFor[Status](), "", bad), jsonLeaves(reflect.TypeFor[PrefetchJob](), "job", bad)...)
}

// TestJSONNames: every field of the API types has a snake_case JSON name,
// none is embedded, and no type of another package is reachable from them
// (the daemon's internal stats cannot leak into the JSON).
func TestJSONNames(t *testing.T) {
	leaves := apiLeaves(t)
	for _, want := range []string{"version", "store.disk_bytes", "paths[].rtt_ms", "prefetch[]", "job.created", "job.rate_bytes_per_second", "job.paths"} {
		if !slices.Contains(leaves, want) {
			t.Errorf("no field %s among %v", want, leaves)
		}
	}
	// The walk itself catches what it looks for.
	type leaky struct {
		Good int `json:"good_total"`
		Bad  int `json:"BadName"`
		None int
		Time time.Duration `json:"wait"`
	}
	var caught []string
	jsonLeaves(reflect.TypeFor[leaky](), "", func(s string) { caught = append(caught, s) })
	if len(caught) != 3 {
		t.Errorf("a type with a bad name, a missing tag and another package's type: caught %q, want 3", caught)
	}
}

// TestREADMEDocumentsStatus: the README's "Status JSON" section names every
// field of the API in its tables (as `store.disk_bytes`, `job.state`), and
// names no field that does not exist (an object holding fields, such as
// `paths[]`, may have a row of its own).
func TestREADMEDocumentsStatus(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n### Status JSON\n")
	if !ok {
		t.Fatal(`README.md has no "### Status JSON" section`)
	}
	if end := regexp.MustCompile(`\n##+ `).FindStringIndex(section); end != nil {
		section = section[:end[0]]
	}
	documented := make(map[string]bool)
	for _, m := range regexp.MustCompile("(?m)^\\| `([^`]+)`").FindAllStringSubmatch(section, -1) {
		documented[m[1]] = true
	}
	leaves := apiLeaves(t)
	for _, l := range leaves {
		if !documented[l] {
			t.Errorf("README's Status JSON section does not document %s", l)
		}
	}
	for d := range documented {
		if !slices.ContainsFunc(leaves, func(l string) bool { return l == d || strings.HasPrefix(l, d+".") }) {
			t.Errorf("README's Status JSON section documents %s, which is no field", d)
		}
	}
}
