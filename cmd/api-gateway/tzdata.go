package main

// API key time windows name IANA time zones; embedding the database makes them work in
// minimal images (distroless has no /usr/share/zoneinfo).
import _ "time/tzdata"
