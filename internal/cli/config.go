package cli

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/BurntSushi/toml"
)

// ApplyConfig sets the flags of fl that are not set yet (those fl.Visit
// does not report: flags on the command line override the file) from the
// TOML file path. Its keys are flag names, at the top level:
//
//	listen = "0.0.0.0:4433"
//	client-ca = "/etc/kwikfs/ca.pem"
//	memory-cache = "64M"
//	xattrs = true
//	secondary = ["10.0.0.2:4434", "10.0.0.3:4434,name=mirror-3"]
//
// A boolean flag takes a TOML boolean; a repeatable flag (StringList) an
// array of strings, each value one use of the flag; a string flag a TOML
// string; any other flag (numbers, durations such as "30s", sizes) a
// string, an integer or a float, which its Set reads as it reads the
// command line; a duration flag a string such as "30s". An unknown key, a key of the wrong type, a value the
// flag refuses and a "config" key are errors naming the file, the line and
// the key, and wrap ErrUsage, as do a file that cannot be read or is not
// TOML. A key the command line set is checked for its type and not
// applied.
func ApplyConfig(fl *flag.FlagSet, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%w: config: %w", ErrUsage, err)
	}
	var keys map[string]toml.Primitive
	md, err := toml.Decode(string(data), &keys)
	if err != nil {
		return configError(path, err)
	}
	set := make(map[string]bool)
	fl.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, k := range md.Keys() { // in the file's order
		if len(k) != 1 {
			continue // inside a table: the table's own key is refused
		}
		v := configValue{fl: fl, name: k[0], skip: set[k[0]]}
		// Decoding through configValue's UnmarshalTOML makes toml report
		// its errors with the key's line.
		if err := md.PrimitiveDecode(keys[k[0]], &v); err != nil {
			return configError(path, err)
		}
	}
	return nil
}

// configError describes err, from toml, as an error of config file path.
func configError(path string, err error) error {
	var pe toml.ParseError
	if !errors.As(err, &pe) {
		return Usagef("config %s: %v", path, err)
	}
	where := path
	if pe.Position.Line > 0 {
		where = fmt.Sprintf("%s:%d", path, pe.Position.Line)
	}
	if pe.LastKey != "" {
		return Usagef("config %s: key %q: %s", where, pe.LastKey, pe.Message)
	}
	return Usagef("config %s: %s", where, pe.Message)
}

// configValue applies one key of a config file to flag name of fl, unless
// skip (the command line set it).
type configValue struct {
	fl   *flag.FlagSet
	name string
	skip bool
}

var _ toml.Unmarshaler = (*configValue)(nil)

// UnmarshalTOML checks data, the key's TOML value, against the flag's
// kind and sets the flag from it.
func (v *configValue) UnmarshalTOML(data any) error {
	f := v.fl.Lookup(v.name)
	switch {
	case v.name == "config":
		return errors.New("a config file cannot name another (config is a command-line flag)")
	case f == nil:
		return fmt.Errorf("unknown key: %s has no flag --%s", v.fl.Name(), v.name)
	}
	var values []string
	switch kind := flagKind(f); kind {
	case "boolean":
		b, ok := data.(bool)
		if !ok {
			return fmt.Errorf("want a boolean (true or false), not %s", tomlType(data))
		}
		values = []string{strconv.FormatBool(b)}
	case "array of strings":
		arr, ok := data.([]any)
		if !ok {
			return fmt.Errorf("want an array of strings (the flag is repeatable), not %s", tomlType(data))
		}
		for i, e := range arr {
			s, ok := e.(string)
			if !ok {
				return fmt.Errorf("element %d: want a string, not %s", i, tomlType(e))
			}
			values = append(values, s)
		}
	case "string":
		s, ok := data.(string)
		if !ok {
			return fmt.Errorf("want a string, not %s", tomlType(data))
		}
		values = []string{s}
	case "duration":
		s, ok := data.(string)
		if !ok {
			return fmt.Errorf("want a duration as a string, e.g. \"30s\" or \"2m\", not %s", tomlType(data))
		}
		if _, err := time.ParseDuration(s); err != nil {
			return err // more telling than flag's "parse error"
		}
		values = []string{s}
	default:
		switch d := data.(type) {
		case string:
			values = []string{d}
		case int64:
			values = []string{strconv.FormatInt(d, 10)}
		case float64:
			values = []string{strconv.FormatFloat(d, 'g', -1, 64)}
		default:
			return fmt.Errorf("want a string or a number, not %s", tomlType(data))
		}
	}
	if v.skip {
		return nil
	}
	for _, s := range values {
		if err := v.fl.Set(v.name, s); err != nil {
			return fmt.Errorf("invalid value %q: %w", s, err)
		}
	}
	return nil
}

// flagKind names the TOML type a flag takes: "boolean", "array of
// strings", "string", "duration" (a string), or "" for what Set parses
// from a string or a number.
func flagKind(f *flag.Flag) string {
	if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
		return "boolean"
	}
	if _, ok := f.Value.(*StringList); ok {
		return "array of strings"
	}
	if g, ok := f.Value.(flag.Getter); ok {
		switch g.Get().(type) {
		case string:
			return "string"
		case time.Duration:
			return "duration"
		}
	}
	return ""
}

// tomlType names the TOML type of a decoded value.
func tomlType(data any) string {
	switch d := data.(type) {
	case string:
		return fmt.Sprintf("the string %q", d)
	case int64:
		return fmt.Sprintf("the integer %d", d)
	case float64:
		return fmt.Sprintf("the float %v", d)
	case bool:
		return fmt.Sprintf("the boolean %v", d)
	case []any, []map[string]any:
		return "an array"
	case map[string]any:
		return "a table"
	case time.Time:
		return "a date or time"
	}
	return fmt.Sprintf("a %T", data)
}
