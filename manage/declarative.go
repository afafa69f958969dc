package manage

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"

	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
)

// fileSections maps the declarative file's top-level keys to kinds.
var fileSections = map[string]model.Kind{
	"routes": model.KindRoutes, "services": model.KindServices, "api_keys": model.KindAPIKeys,
	"rate_limits": model.KindRateLimits, "ip_rules": model.KindIPRules, "policies": model.KindPolicies,
	"tenants": model.KindTenants, "settings": model.KindSettings,
}

// FileObject is one object read from a declarative file.
type FileObject struct {
	Kind model.Kind
	Obj  model.Object
	Line int
	// node is the object's YAML, to name the line of a field a later check reports.
	node *yaml.Node
	// reported holds the problems decoding found; an object with some is partial: it holds
	// the values that decoded, for the checks that can still run on it (CheckFileData).
	reported   model.FieldErrors
	decodeErrs bool
	ref        string
}

// FileProblem is one problem in a declarative file, with its line.
type FileProblem struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Object  string `json:"object,omitempty"` // kind/id
	Field   string `json:"field,omitempty"`
	Problem string `json:"problem"`
}

func (p FileProblem) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s:%d:", p.File, p.Line)
	if p.Object != "" {
		fmt.Fprintf(&b, " %s:", p.Object)
	}
	if p.Field != "" {
		fmt.Fprintf(&b, " %s:", p.Field)
	}
	b.WriteString(" " + p.Problem)
	return b.String()
}

// FileError carries every problem of a rejected file.
type FileError []FileProblem

func (e FileError) Error() string {
	lines := make([]string, len(e))
	for i, p := range e {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// ParseFile reads a declarative YAML file: top-level keys routes, services, api_keys,
// rate_limits, ip_rules, policies, tenants (lists) and settings (one object). A file with
// top-level `domain` and `descriptors` is an envoyproxy/ratelimit config, loaded unchanged as
// one rate-limit object. Every object is decoded strictly and validated on its own.
func ParseFile(name string, data []byte) ([]FileObject, FileError) {
	all, probs := parseFile(name, data)
	var objs []FileObject
	for _, fo := range all {
		if len(fo.reported) == 0 {
			objs = append(objs, fo)
		}
	}
	return objs, probs
}

// parseFile is ParseFile with the partial objects too (those decoding found problems in).
func parseFile(name string, data []byte) ([]FileObject, FileError) {
	docs, probs := yamlDocuments(name, data)
	if len(probs) > 0 {
		return nil, probs
	}
	if len(docs) == 0 {
		return nil, nil
	}
	doc := docs[0].Content[0]
	if doc.Kind != yaml.MappingNode {
		return nil, FileError{{File: name, Line: doc.Line, Problem: "the file must be a mapping with keys " + strings.Join(sectionNames(), ", ")}}
	}
	if mapGet(doc, "domain") != nil && mapGet(doc, "descriptors") != nil {
		obj, reported, decodeErrs, probs := decodeNode(name, model.KindRateLimits, doc)
		if obj == nil {
			return nil, probs
		}
		if obj.GetID() == "" {
			obj.SetID(sanitizeID(valueOf(mapGet(doc, "domain"))))
		}
		return []FileObject{{Kind: model.KindRateLimits, Obj: obj, Line: doc.Line, node: doc, reported: reported, decodeErrs: decodeErrs,
			ref: string(model.KindRateLimits) + "/" + obj.GetID()}}, probs
	}
	var objs []FileObject
	seen := map[string]int{}
	sectionAt := map[string]int{}
	for i := 0; i+1 < len(doc.Content); i += 2 {
		key, val := doc.Content[i], doc.Content[i+1]
		if first, dup := sectionAt[key.Value]; dup {
			// Its objects are still checked below, so the file's every problem is named.
			probs = append(probs, FileProblem{File: name, Line: key.Line, Field: key.Value, Problem: fmt.Sprintf(
				"section written twice (first at line %d): a key of a mapping is written once; put the objects in one list", first)})
		} else {
			sectionAt[key.Value] = key.Line
		}
		kind, ok := fileSections[key.Value]
		if !ok {
			probs = append(probs, FileProblem{File: name, Line: key.Line, Field: key.Value, Problem: "unknown section; expected one of " + strings.Join(sectionNames(), ", ")})
			continue
		}
		items := []*yaml.Node{val}
		if kind != model.KindSettings {
			if val.Kind != yaml.SequenceNode {
				probs = append(probs, FileProblem{File: name, Line: val.Line, Field: key.Value, Problem: "must be a list"})
				continue
			}
			items = val.Content
		}
		for _, item := range items {
			obj, reported, decodeErrs, p := decodeNode(name, kind, item)
			probs = append(probs, p...)
			if obj == nil {
				continue
			}
			partial := len(reported) > 0
			if kind == model.KindSettings {
				obj.SetID(model.SettingsID)
			}
			if kind == model.KindServices && obj.GetID() == "" {
				obj.SetID(obj.(*model.Service).DefaultID())
			}
			if partial {
				// Checked further only when it is plainly one object (CheckFileData); its
				// id and duplicates are not reported on top of what decoding found.
				if ref := string(kind) + "/" + obj.GetID(); obj.GetID() != "" && seen[ref] == 0 {
					seen[ref] = item.Line
					objs = append(objs, FileObject{Kind: kind, Obj: obj, Line: item.Line, node: item, reported: reported, decodeErrs: decodeErrs, ref: fileRef(kind, item)})
				}
				continue
			}
			if obj.GetID() == "" {
				probs = append(probs, FileProblem{File: name, Line: item.Line, Object: string(kind), Field: "id", Problem: "is required in a config file (ids keep objects stable across reloads)"})
				continue
			}
			ref := string(kind) + "/" + obj.GetID()
			if first, dup := seen[ref]; dup {
				probs = append(probs, FileProblem{File: name, Line: item.Line, Object: ref, Field: "id", Problem: fmt.Sprintf("duplicate id (first at line %d)", first)})
				continue
			}
			seen[ref] = item.Line
			objs = append(objs, FileObject{Kind: kind, Obj: obj, Line: item.Line, node: item, ref: ref})
		}
	}
	return objs, probs
}

// yamlDocuments returns the file's documents that hold something (a document that is only
// comments, or a lone trailing "---", holds nothing) and refuses a file with more than one.
//
// A declarative file is the whole desired state in one mapping. Several "---" documents used
// to be read as the first alone, silently dropping the rest. Merging them would have to
// define what a section repeated across documents means (append? replace? settings twice?)
// and would make a Kubernetes-style file of separate objects look supported when it is not;
// refusing, with the line of each extra document, is unambiguous and can still grow into a
// merge later without changing the meaning of any file accepted today.
func yamlDocuments(name string, data []byte) ([]*yaml.Node, FileError) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []*yaml.Node
	var probs FileError
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, append(probs, FileProblem{File: name, Line: yamlErrLine(err), Problem: "not valid YAML: " + err.Error()})
		}
		if len(n.Content) == 0 || (n.Content[0].Kind == yaml.ScalarNode && n.Content[0].Tag == "!!null" && n.Content[0].Value == "") {
			continue
		}
		if len(docs) > 0 {
			probs = append(probs, FileProblem{File: name, Line: n.Line, Problem: fmt.Sprintf(
				"a second YAML document (\"---\"); a config file is one document, the first starting at line %d: "+
					"move these sections into it or use another file", docs[0].Content[0].Line)})
		}
		docs = append(docs, &n)
	}
	return docs, probs
}

func sectionNames() []string {
	out := make([]string, 0, len(fileSections))
	for k := range fileSections {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// decodeNode converts one YAML object to JSON and decodes it strictly, mapping field errors
// back to lines. An object with problems is returned too, with them as found (reported),
// unless nothing of it decoded: the checks beyond its own still run on it (CheckFileData),
// as the API runs them on a body with bad fields. decodeErrs tells that decoding itself
// found problems, so the object lacks the refused values.
func decodeNode(file string, kind model.Kind, n *yaml.Node) (obj model.Object, reported model.FieldErrors, decodeErrs bool, out FileError) {
	var dups []FileProblem
	n = withoutDuplicateKeys(n, "", func(line, first int, field string) {
		dups = append(dups, FileProblem{File: file, Line: line, Object: fileRef(kind, n), Field: field,
			Problem: fmt.Sprintf("written twice (first at line %d): a key of a mapping is written once", first)})
	})
	if len(dups) > 0 {
		// The repeats are taken out, so the rest of the object is still checked: every
		// problem at once. The object is never applied (its problems are reported ones).
		obj, reported, _, out := decodeNode(file, kind, n)
		for _, d := range dups {
			reported = append(reported, model.FieldError{Field: d.Field, Problem: d.Problem})
		}
		return obj, reported, true, append(dups, out...)
	}
	var v any
	if err := timestampsAsText(n, map[*yaml.Node]*yaml.Node{}).Decode(&v); err != nil {
		return nil, nil, false, FileError{{File: file, Line: n.Line, Object: fileRef(kind, n), Problem: err.Error()}}
	}
	data, err := json.Marshal(normalizeYAML(v))
	if err != nil {
		return nil, nil, false, FileError{{File: file, Line: n.Line, Object: string(kind), Problem: err.Error()}}
	}
	obj, errs := decodeObject(kind, data)
	decodeErrs = len(errs) > 0
	if !decodeErrs {
		if k, ok := obj.(*model.APIKey); ok && k.SecretHash != "" && !isSHA256Digest(k.SecretHash) {
			// Anything else is stored and never matches a secret: the key lets nobody in.
			errs.Add("secret_hash", "must be \"sha256:\" and the 64 hex digits of the secret's SHA-256 (never put a secret itself in a file)")
		}
		errs = append(errs, obj.Validate()...)
	}
	if len(errs) == 0 {
		return obj, nil, false, nil
	}
	ref := fileRef(kind, n)
	for _, fe := range errs {
		out = append(out, FileProblem{File: file, Line: lineOf(n, fe.Field), Object: ref, Field: fe.Field, Problem: fe.Problem})
	}
	return obj, errs, decodeErrs, out
}

// timestampsAsText returns n with every plain scalar YAML would resolve to a timestamp
// (2030-01-01, 2030-01-01 10:00:00) read as the text written. Decoded into a time, json.Marshal
// would rewrite it: a string field (a header value, metadata) would be stored changed, and a
// time field would take spellings the API refuses (it reads RFC 3339 only). An explicit
// !!timestamp tag is the author's choice and kept. n itself is never changed; seen holds each
// node's copy so an alias (and an alias bomb, which Decode then refuses) is walked once.
func timestampsAsText(n *yaml.Node, seen map[*yaml.Node]*yaml.Node) *yaml.Node {
	if c, ok := seen[n]; ok {
		return c
	}
	seen[n] = n
	switch {
	case n.Kind == yaml.ScalarNode && n.Style&yaml.TaggedStyle == 0 && n.ShortTag() == "!!timestamp":
		c := *n
		c.Tag = "!!str"
		seen[n] = &c
		return &c
	case n.Kind == yaml.AliasNode && n.Alias != nil:
		if a := timestampsAsText(n.Alias, seen); a != n.Alias {
			c := *n
			c.Alias = a
			seen[n] = &c
			return &c
		}
	case len(n.Content) > 0:
		var content []*yaml.Node
		for i, e := range n.Content {
			if t := timestampsAsText(e, seen); t != e {
				if content == nil {
					content = append([]*yaml.Node(nil), n.Content...)
				}
				content[i] = t
			}
		}
		if content != nil {
			c := *n
			c.Content = content
			seen[n] = &c
			return &c
		}
	}
	return n
}

// withoutDuplicateKeys calls dup for every key written twice in a mapping of n (YAML keys
// are unique: the decoder refuses a repeat but names only the object's first line) and
// returns n with the repeats taken out (a copy where something was taken out; n itself is
// never changed). Aliases are not followed: an anchored node is checked where it is written.
func withoutDuplicateKeys(n *yaml.Node, path string, dup func(line, first int, field string)) *yaml.Node {
	switch n.Kind {
	case yaml.MappingNode:
		var content []*yaml.Node
		changed := false
		at := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			field := join(path, k.Value)
			if first, ok := at[k.Value]; ok && k.Kind == yaml.ScalarNode {
				dup(k.Line, first, field)
				changed = true
				continue
			}
			at[k.Value] = k.Line
			nv := withoutDuplicateKeys(v, field, dup)
			changed = changed || nv != v
			content = append(content, k, nv)
		}
		if !changed {
			return n
		}
		c := *n
		c.Content = content
		return &c
	case yaml.SequenceNode:
		var content []*yaml.Node
		changed := false
		for i, v := range n.Content {
			nv := withoutDuplicateKeys(v, fmt.Sprintf("%s[%d]", path, i), dup)
			changed = changed || nv != v
			content = append(content, nv)
		}
		if !changed {
			return n
		}
		c := *n
		c.Content = content
		return &c
	}
	return n
}

// isSHA256Digest tells whether h is the stored form of a secret's hash: "sha256:<64 hex>".
func isSHA256Digest(h string) bool {
	d, ok := strings.CutPrefix(h, "sha256:")
	if !ok || len(d) != 64 {
		return false
	}
	_, err := hex.DecodeString(d)
	return err == nil
}

// fileRef names an object of the file in its problems: kind/id as written.
func fileRef(kind model.Kind, n *yaml.Node) string {
	if id := valueOf(mapGet(n, "id")); id != "" {
		return string(kind) + "/" + id
	}
	if kind == model.KindSettings {
		return string(kind) + "/" + model.SettingsID // as every later check and the API name it
	}
	return string(kind)
}

// normalizeYAML turns map[any]any (from YAML) into JSON-encodable maps.
func normalizeYAML(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, vv := range x {
			x[k] = normalizeYAML(vv)
		}
		return x
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, vv := range x {
			m[fmt.Sprint(k)] = normalizeYAML(vv)
		}
		return m
	case []any:
		for i := range x {
			x[i] = normalizeYAML(x[i])
		}
		return x
	case float64:
		// A YAML float stays one in JSON: json.Marshal writes 80.0 as 80, which a
		// whole-number field would take, though the API refuses 80.0 in a body.
		if x == math.Trunc(x) && !math.IsInf(x, 0) {
			return json.Number(strconv.FormatFloat(x, 'f', -1, 64) + ".0")
		}
	}
	return v
}

var pathSeg = regexp.MustCompile(`([^.\[\]]+)|\[(\d+)\]`)

// lineOf finds the line of a field path ("targets[0].port") inside an object node.
func lineOf(n *yaml.Node, path string) int {
	line := n.Line
	cur := n
	for _, m := range pathSeg.FindAllStringSubmatch(path, -1) {
		switch {
		case m[1] != "" && cur.Kind == yaml.MappingNode:
			found := false
			for i := 0; i+1 < len(cur.Content); i += 2 {
				if cur.Content[i].Value == m[1] {
					line, cur, found = cur.Content[i].Line, cur.Content[i+1], true
					break
				}
			}
			if !found {
				return line
			}
		case m[2] != "" && cur.Kind == yaml.SequenceNode:
			i, _ := strconv.Atoi(m[2])
			if i >= len(cur.Content) {
				return line
			}
			cur = cur.Content[i]
			line = cur.Line
		default:
			return line
		}
	}
	return line
}

func mapGet(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func valueOf(n *yaml.Node) string {
	if n == nil {
		return ""
	}
	return n.Value
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

func yamlErrLine(err error) int {
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 1
}

func sanitizeID(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	if b.Len() == 0 {
		return "ratelimit"
	}
	return b.String()
}

// CheckFileData is every check of a declarative file, the one path `serve --config`, SIGHUP
// and `api-gateway validate -f` run: strict decoding and each object's validation, then the
// references and component validators of the objects that decoded (so one object's wrong
// type does not hide another object's bad reference: every problem at once, as the API
// reports each object's), then, for a file with no problem, the whole-revision checks.
// A reference to an object that did not decode is reported missing, as the API would
// answer after refusing that object.
func (a *API) CheckFileData(ctx context.Context, name string, data []byte) ([]FileObject, FileError) {
	base, err := a.fileBase(ctx)
	if err != nil {
		return nil, FileError{{File: name, Problem: "could not read the stored configuration to check the file against: " + err.Error()}}
	}
	all, probs := parseFile(name, data)
	var objs, partial []FileObject
	for _, fo := range all {
		if len(fo.reported) > 0 {
			partial = append(partial, fo)
		} else {
			objs = append(objs, fo)
		}
	}
	probs = append(probs, a.checkFile(name, base, objs)...)
	if len(partial) > 0 {
		// Each object with problems is checked against the model with the file's good
		// objects, not with the other broken ones: the API would not have stored those.
		snap := mergeSnapshot(base, objs)
		for _, fo := range partial {
			found := a.checkAgainst(fo.Kind, fo.Obj, snap)
			if fo.decodeErrs {
				found = partialProblems(fo.reported, found)
			}
			for _, fe := range found {
				probs = append(probs, FileProblem{File: name, Line: fo.FieldLine(fe.Field), Object: fo.ref, Field: fe.Field, Problem: fe.Problem})
			}
		}
	}
	if len(probs) > 0 {
		return nil, probs
	}
	return objs, a.checkFileRevision(ctx, name, base, objs)
}

// fileBase is the model a file is checked against: the applied one, or, before the
// pipeline's first Sync (serve stores its file at start), the one the store holds. The
// empty model there refused a file naming an object written through the API before a
// restart, and missed a file's conflict with one.
func (a *API) fileBase(ctx context.Context) (*model.Snapshot, error) {
	if a.Model != nil {
		if s := a.Model.Current(); s != nil {
			return s, nil
		}
	}
	if a.Store == nil {
		return a.snapshot(), nil // validate -f: nothing stored
	}
	snap, _, err := store.Snapshot(ctx, a.Store)
	if err != nil {
		return nil, err
	}
	return snap, nil
}

// checkFile validates a parsed file as a whole against base merged with the file's objects:
// references between objects and every component validator.
func (a *API) checkFile(name string, base *model.Snapshot, objs []FileObject) FileError {
	snap := mergeSnapshot(base, objs)
	var probs FileError
	for _, fo := range objs {
		errs := a.crossCheck(fo.Kind, fo.Obj, snap)
		a.mu.RLock()
		vs := a.validators[fo.Kind]
		a.mu.RUnlock()
		for _, v := range vs {
			errs = append(errs, v(fo.Obj, snap)...)
		}
		for _, fe := range errs {
			probs = append(probs, FileProblem{File: name, Line: fo.FieldLine(fe.Field), Object: string(fo.Kind) + "/" + fo.Obj.GetID(), Field: fe.Field, Problem: fe.Problem})
		}
	}
	return probs
}

// FieldLine is the line of a field of the object, e.g. "targets[0].tls" (the object's own
// line when the field is not written in the file).
func (fo FileObject) FieldLine(field string) int {
	if fo.node == nil {
		return fo.Line
	}
	return lineOf(fo.node, field)
}

// FileSnapshot is the model the file's objects (CheckFileData's) make on top of the one the
// file is checked against: the revision whose whole-revision checks the file passed.
// validate -f reads from it what the serving components leave out by design.
func (a *API) FileSnapshot(ctx context.Context, objs []FileObject) (*model.Snapshot, error) {
	base, err := a.fileBase(ctx)
	if err != nil {
		return nil, err
	}
	return mergeSnapshot(base, objs), nil
}

// mergeSnapshot returns base with the file's objects put in (replacing same ids).
func mergeSnapshot(base *model.Snapshot, objs []FileObject) *model.Snapshot {
	raw := map[model.Kind][]model.RawObject{}
	put := func(k model.Kind, o model.Object) {
		data, _ := json.Marshal(o)
		raw[k] = append(raw[k], model.RawObject{ID: o.GetID(), Revision: o.GetMeta().Revision, Data: data})
	}
	inFile := map[string]bool{}
	for _, fo := range objs {
		inFile[string(fo.Kind)+"/"+fo.Obj.GetID()] = true
		put(fo.Kind, fo.Obj)
	}
	each := func(k model.Kind, o model.Object) {
		if !inFile[string(k)+"/"+o.GetID()] {
			put(k, o)
		}
	}
	for _, o := range base.Routes {
		each(model.KindRoutes, o)
	}
	for _, o := range base.Services {
		each(model.KindServices, o)
	}
	for _, o := range base.APIKeys {
		each(model.KindAPIKeys, o)
	}
	for _, o := range base.RateLimits {
		each(model.KindRateLimits, o)
	}
	for _, o := range base.IPRules {
		each(model.KindIPRules, o)
	}
	for _, o := range base.Policies {
		each(model.KindPolicies, o)
	}
	for _, o := range base.Tenants {
		each(model.KindTenants, o)
	}
	if base.Settings != nil && base.Settings.GetMeta().Revision != 0 {
		each(model.KindSettings, base.Settings)
	}
	snap, _ := model.Decode(base.Revision, raw)
	return snap
}

// ApplyFile reads, validates and applies a declarative file in one transaction: every object
// in it is created or replaced; a file with any problem changes nothing. API keys in a file
// keep the secret hash of the stored key unless the file sets one.
func (a *API) ApplyFile(ctx context.Context, path string) (uint64, error) {
	rev, err := a.StoreFile(ctx, path)
	if err != nil {
		return rev, err
	}
	if err := a.waitApplied(ctx, rev); err != nil {
		return rev, fmt.Errorf("the file is stored but not in effect: %w", err)
	}
	return rev, nil
}

// StoreFile is ApplyFile without waiting for the revision to apply: at start, before the
// pipeline runs (its first Sync applies the file, or starts the gateway not ready on a
// refusal), where a wait could only run out.
func (a *API) StoreFile(ctx context.Context, path string) (uint64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	objs, probs := a.CheckFileData(ctx, path, data)
	if len(probs) > 0 {
		return 0, probs
	}
	now := a.Now().UTC()
	ops := make([]store.Op, 0, len(objs))
	for _, fo := range objs {
		prev, err := a.load(ctx, fo.Kind, fo.Obj.GetID())
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return 0, err
		}
		clearServerOwned(fo.Obj)
		if prev != nil {
			// carryOver keeps the stored secret, as an API write must; a file may set its own
			// (a rotation by file), so the file's is put back after it.
			var fileHash string
			if k, ok := fo.Obj.(*model.APIKey); ok {
				fileHash = k.SecretHash
			}
			a.carryOver(fo.Obj, prev)
			fo.Obj.GetMeta().CreatedAt = prev.GetMeta().CreatedAt
			if k, ok := fo.Obj.(*model.APIKey); ok && fileHash != "" {
				k.SecretHash = fileHash
			}
		} else {
			a.carryOver(fo.Obj, nil)
			fo.Obj.GetMeta().CreatedAt = now
		}
		m := fo.Obj.GetMeta()
		m.UpdatedAt, m.Revision = now, 0
		b, _ := json.Marshal(fo.Obj)
		if prev != nil {
			old, _ := json.Marshal(stripTimes(prev))
			if bytes.Equal(old, mustJSON(stripTimes(fo.Obj))) {
				continue // unchanged: no new revision, no push
			}
		}
		ops = append(ops, store.Op{Type: store.OpPut, Kind: fo.Kind, ID: fo.Obj.GetID(), Data: b})
	}
	if len(ops) == 0 {
		return a.Store.Revision(ctx)
	}
	return a.Store.Txn(ctx, ops)
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// stripTimes returns a JSON-comparable copy of an object without server-stamped fields.
func stripTimes(o model.Object) any {
	b, _ := json.Marshal(o)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	delete(m, "created_at")
	delete(m, "updated_at")
	delete(m, "revision")
	delete(m, "last_heartbeat")
	return m
}
