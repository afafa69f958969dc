package main

import "sort"

// A wirer plugs one component into the app; component wire files register theirs in init.
type wirer struct {
	name  string
	order int
	fn    func(*app) error
}

var wirers []wirer

// register adds a component's wire function; lower order runs first.
func register(name string, order int, fn func(*app) error) {
	wirers = append(wirers, wirer{name, order, fn})
	sort.SliceStable(wirers, func(i, j int) bool { return wirers[i].order < wirers[j].order })
}
