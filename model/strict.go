package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"
)

// DecodeStrict decodes one JSON object into obj (a pointer to a model struct) and reports
// every problem with its field path: malformed JSON, unknown fields and wrong types, all at
// once, so a client fixes its request in one round.
func DecodeStrict(data []byte, obj any) FieldErrors {
	var errs FieldErrors
	if !utf8.Valid(data) {
		// encoding/json would store each bad byte as U+FFFD: a value other than the one sent,
		// and two names differing only there would become one.
		errs.Add("", "the body is not valid UTF-8 (JSON text is UTF-8)")
		return errs
	}
	var generic any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&generic); err != nil {
		errs.Add("", "malformed JSON: %s", jsonErrText(err, data))
		return errs
	}
	if dec.More() {
		errs.Add("", "malformed JSON: unexpected data after the object")
		return errs
	}
	if _, ok := generic.(map[string]any); !ok {
		errs.Add("", "the body must be a JSON object")
		return errs
	}
	errs = append(errs, DuplicateKeys(data)...)
	checkValue(&errs, "", generic, reflect.TypeOf(obj).Elem())
	if len(errs) > 0 {
		// checkValue reported and took out every value it refused (wrong type, bad form,
		// unknown field), so the rest decodes and is validated too: the client sees every
		// bad field at once, not the first kind of problem alone.
		return append(errs, validateRest(generic, obj, errs)...)
	}
	if err := json.Unmarshal(data, obj); err != nil {
		// A value that has the right JSON type but a bad form, such as a duration string.
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) {
			errs.Add(ute.Field, "must be %s", ute.Type.String())
		} else {
			errs.Add("", "%s", strings.TrimPrefix(err.Error(), "json: "))
		}
	}
	return errs
}

func jsonErrText(err error, data []byte) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line := 1 + bytes.Count(data[:min(int(se.Offset), len(data))], []byte("\n"))
		return fmt.Sprintf("%s (line %d, byte %d)", se.Error(), line, se.Offset)
	}
	return err.Error()
}

var (
	durationType    = reflect.TypeOf(Duration(0))
	timeType        = reflect.TypeOf(time.Time{})
	unmarshalerType = reflect.TypeOf((*json.Unmarshaler)(nil)).Elem()
)

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// validateRest decodes what is left of a body whose refused values were taken out and returns
// the object's own validation problems on fields not already reported, nor inside one (a
// value taken out is not also reported for what it lacks).
func validateRest(generic any, obj any, reported FieldErrors) FieldErrors {
	v, ok := obj.(interface{ Validate() FieldErrors })
	if !ok {
		return nil
	}
	rest, err := json.Marshal(generic)
	if err != nil || json.Unmarshal(rest, obj) != nil {
		return nil
	}
	seen := map[string]bool{}
	for _, e := range reported {
		seen[e.Field] = true
	}
	var out FieldErrors
	for _, e := range v.Validate() {
		if !seen[e.Field] && !insideReported(e.Field, seen) {
			out = append(out, e)
		}
	}
	return out
}

// insideReported tells whether field lies inside a reported one (targets[0].port inside
// targets or targets[0]).
func insideReported(field string, seen map[string]bool) bool {
	for i := 0; i < len(field); i++ {
		if (field[i] == '.' || field[i] == '[') && seen[field[:i]] {
			return true
		}
	}
	return false
}

// checkValue compares a generic JSON value with the Go type it will decode into. A value it
// refuses (a wrong JSON type, or the right type in a bad form such as an overflowing
// duration) is reported and checkValue returns true, so the caller, holding its container,
// nulls it; unknown fields are reported and deleted (see DecodeStrict).
func checkValue(errs *FieldErrors, path string, v any, t reflect.Type) (refused bool) {
	if v == nil {
		return false // null is accepted for every field and leaves the zero value
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t {
	case durationType:
		switch x := v.(type) {
		case string:
			if _, err := ParseDuration(x); err != nil {
				errs.Add(path, "%v", err)
				return true
			}
		case json.Number:
			if _, err := secondsDuration(x.String()); err != nil {
				errs.Add(path, "%v", err)
				return true
			}
		default:
			errs.Add(path, "must be a duration string such as \"30s\"")
			return true
		}
		return false
	case timeType:
		s, ok := v.(string)
		if !ok {
			errs.Add(path, "must be an RFC 3339 time string")
			return true
		}
		if _, err := time.Parse(time.RFC3339, s); err != nil {
			errs.Add(path, "must be an RFC 3339 time such as 2025-01-31T00:00:00Z")
			return true
		}
		return false
	}
	if t.Kind() == reflect.Struct && reflect.PointerTo(t).Implements(unmarshalerType) {
		// The type decodes itself (aliases, two shapes); json.Unmarshal reports its errors.
		return false
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			errs.Add(path, "must be an object")
			return true
		}
		fields := structFields(t)
		for k, fv := range m {
			ft, ok := fields[k]
			if !ok {
				errs.Add(join(path, k), "unknown field")
				delete(m, k)
				continue
			}
			if checkValue(errs, join(path, k), fv, ft) {
				m[k] = nil
			}
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			errs.Add(path, "must be an object")
			return true
		}
		for k, fv := range m {
			if checkValue(errs, join(path, k), fv, t.Elem()) {
				delete(m, k)
			}
		}
	case reflect.Slice, reflect.Array:
		a, ok := v.([]any)
		if !ok {
			errs.Add(path, "must be an array")
			return true
		}
		for i, fv := range a {
			if checkValue(errs, fmt.Sprintf("%s[%d]", path, i), fv, t.Elem()) {
				a[i] = nil
			}
		}
	case reflect.String:
		if _, ok := v.(string); !ok {
			errs.Add(path, "must be a string")
			return true
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			errs.Add(path, "must be true or false")
			return true
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := v.(json.Number)
		if !ok {
			errs.Add(path, "must be a whole number")
			return true
		}
		if _, err := n.Int64(); err != nil {
			errs.Add(path, "must be a whole number")
			return true
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := v.(json.Number)
		if !ok || strings.HasPrefix(n.String(), "-") {
			errs.Add(path, "must be a whole number, not negative")
			return true
		}
		if _, err := n.Int64(); err != nil {
			errs.Add(path, "must be a whole number, not negative")
			return true
		}
	case reflect.Float32, reflect.Float64:
		if _, ok := v.(json.Number); !ok {
			errs.Add(path, "must be a number")
			return true
		}
	case reflect.Interface:
	}
	return false
}

// structFields maps JSON names to field types, flattening embedded structs as encoding/json does.
func structFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range structFields(ft) {
					if _, exists := out[k]; !exists {
						out[k] = v
					}
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// DuplicateKeys reports every member name written twice in one object of a JSON document, by
// its field path. Parsers disagree on which of the two values wins (encoding/json takes the
// last, many others the first), so a proxy or audit log in front of the API could read
// another value than the one stored: such a body is refused, as YAML refuses a repeated key.
// Names are compared unescaped ("\u0069d" is "id"). data must be JSON that decoded already:
// this scan (a few times cheaper than json.Decoder.Token) does not check the syntax.
func DuplicateKeys(data []byte) FieldErrors {
	type frame struct {
		object bool
		path   string
		keys   map[string]bool
		key    string // the current member's name (object)
		index  int    // the current element (array)
		atKey  bool   // the next string is a member name (object)
	}
	var errs FieldErrors
	var stack []*frame
	valuePath := func() string {
		if len(stack) == 0 {
			return ""
		}
		f := stack[len(stack)-1]
		if f.object {
			return join(f.path, f.key)
		}
		return fmt.Sprintf("%s[%d]", f.path, f.index)
	}
	for i := 0; i < len(data); i++ {
		switch c := data[i]; c {
		case '{':
			stack = append(stack, &frame{object: true, path: valuePath(), keys: map[string]bool{}, atKey: true})
		case '[':
			stack = append(stack, &frame{path: valuePath()})
		case '}', ']':
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
		case ',':
			if len(stack) > 0 {
				if f := stack[len(stack)-1]; f.object {
					f.atKey = true
				} else {
					f.index++
				}
			}
		case '"':
			start := i + 1
			escaped := false
			for i++; i < len(data) && data[i] != '"'; i++ {
				if data[i] == '\\' {
					escaped = true
					i++
				}
			}
			if len(stack) == 0 {
				continue
			}
			f := stack[len(stack)-1]
			if !f.object || !f.atKey {
				continue
			}
			f.atKey = false
			name := string(data[start:min(i, len(data))])
			if escaped {
				var u string
				if json.Unmarshal(data[start-1:min(i+1, len(data))], &u) == nil {
					name = u
				}
			}
			f.key = name
			if f.keys[name] {
				errs.Add(join(f.path, name), "is written twice in one object: a field is named once")
			}
			f.keys[name] = true
		}
	}
	return errs
}
