package analytics

import (
	"errors"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	alsdata "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// alsMessage is what the ALS stream receives into. It embeds the generated message, so the
// standard proto codec decodes into it as usual; the codec of ServerCodec recognizes it and
// instead decodes only the fields analytics reads, straight into Entries, which is several
// times cheaper than building the full protobuf tree (metadata Structs above all).
type alsMessage struct {
	*accesslogv3.StreamAccessLogsMessage

	fast          bool
	hasIdentifier bool
	node, logName string
	entries       []Entry // final HTTP entries; Time is zero when Envoy sent no start time
	intermediate  int     // HTTP entries that are not a request's final entry
	tcp           int
}

func newALSMessage() *alsMessage {
	return &alsMessage{StreamAccessLogsMessage: &accesslogv3.StreamAccessLogsMessage{}}
}

// ServerCodec returns a gRPC codec named "proto" that decodes ALS messages with the fast
// decoder and hands every other message to the standard proto codec unchanged. Install it
// on the shared gRPC server with ServerOption; without it the ALS service still works, on
// the standard decoder.
func ServerCodec() encoding.CodecV2 { return fastCodec{std: encoding.GetCodecV2("proto")} }

// ServerOption is grpc.ForceServerCodecV2(ServerCodec()).
func ServerOption() grpc.ServerOption { return grpc.ForceServerCodecV2(ServerCodec()) }

type fastCodec struct{ std encoding.CodecV2 }

func (c fastCodec) Name() string { return c.std.Name() }

func (c fastCodec) Marshal(v any) (mem.BufferSlice, error) { return c.std.Marshal(v) }

func (c fastCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*alsMessage)
	if !ok {
		return c.std.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return m.decode(buf.ReadOnlyData())
}

var errTruncated = errors.New("analytics: truncated protobuf")

// fields calls fn for every field of the encoded message b. For varint and fixed fields x
// holds the value; for length-delimited fields v holds the bytes (aliasing b). Groups are
// skipped.
func fields(b []byte, fn func(num protowire.Number, typ protowire.Type, x uint64, v []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errTruncated
		}
		b = b[n:]
		var x uint64
		var v []byte
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var y uint32
			y, n = protowire.ConsumeFixed32(b)
			x = uint64(y)
		case protowire.Fixed64Type:
			x, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return errTruncated
			}
			b = b[n:]
			continue
		}
		if n < 0 {
			return errTruncated
		}
		b = b[n:]
		if err := fn(num, typ, x, v); err != nil {
			return err
		}
	}
	return nil
}

// decode reads a StreamAccessLogsMessage.
func (m *alsMessage) decode(b []byte) error {
	m.fast = true
	return fields(b, func(num protowire.Number, typ protowire.Type, _ uint64, v []byte) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case 1: // identifier
			m.hasIdentifier = true
			return fields(v, func(num protowire.Number, typ protowire.Type, _ uint64, v []byte) error {
				switch {
				case num == 1 && typ == protowire.BytesType: // node
					return fields(v, func(num protowire.Number, typ protowire.Type, _ uint64, v []byte) error {
						if num == 1 && typ == protowire.BytesType {
							m.node = string(v)
						}
						return nil
					})
				case num == 2 && typ == protowire.BytesType:
					m.logName = string(v)
				}
				return nil
			})
		case 2: // http_logs
			return fields(v, func(num protowire.Number, typ protowire.Type, _ uint64, v []byte) error {
				if num != 1 || typ != protowire.BytesType {
					return nil
				}
				var e Entry
				final, err := decodeHTTPEntry(v, &e)
				if err != nil {
					return err
				}
				if final {
					m.entries = append(m.entries, e)
				} else {
					m.intermediate++
				}
				return nil
			})
		case 3: // tcp_logs
			return fields(v, func(num protowire.Number, _ protowire.Type, _ uint64, _ []byte) error {
				if num == 1 {
					m.tcp++
				}
				return nil
			})
		}
		return nil
	})
}

// decodeHTTPEntry fills e from an HTTPAccessLogEntry exactly as FromHTTPLog does (Time is
// left zero without a start time) and reports whether it is a final entry (see Final).
func decodeHTTPEntry(b []byte, e *Entry) (final bool, err error) {
	var (
		lastDownTx, durationField, upRx, upTx time.Duration
		hasLastDownTx, hasDuration            bool
		hasUpRx, hasUpTx                      bool
		intermediate                          bool
		logType                               uint64
		flags                                 *alsdata.ResponseFlags
		method                                uint64
	)
	err = fields(b, func(num protowire.Number, typ protowire.Type, _ uint64, v []byte) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case 1: // common_properties
			return fields(v, func(num protowire.Number, typ protowire.Type, x uint64, v []byte) error {
				switch num {
				case 5: // start_time; an invalid Timestamp is ignored as FromHTTPLog does
					s, n, err := secsNanos(v)
					if err == nil && n >= 0 && n < 1e9 && s >= minTimestamp && s <= maxTimestamp {
						e.Time = time.Unix(s, n).UTC()
					}
					return err
				case 7, 9, 12, 23:
					d, err := durationOf(v)
					if err != nil {
						return err
					}
					switch num {
					case 7:
						upTx, hasUpTx = d, true
					case 9:
						upRx, hasUpRx = d, true
					case 12:
						lastDownTx, hasLastDownTx = d, true
					case 23:
						durationField, hasDuration = d, true
					}
				case 16: // response_flags: small and only on failures; decode it fully
					flags = &alsdata.ResponseFlags{}
					return proto.Unmarshal(v, flags)
				case 17: // metadata
					return decodeMetadata(v, e)
				case 19:
					if typ == protowire.BytesType {
						e.Route = cleanDim(string(v))
					}
				case 27:
					intermediate = x != 0
				case 33:
					logType = x
				}
				return nil
			})
		case 3: // request
			return fields(v, func(num protowire.Number, typ protowire.Type, x uint64, _ []byte) error {
				if typ != protowire.VarintType {
					return nil
				}
				switch num {
				case 1:
					method = x
				case 11, 12:
					e.BytesIn += x
				}
				return nil
			})
		case 4: // response
			return fields(v, func(num protowire.Number, typ protowire.Type, x uint64, v []byte) error {
				switch {
				case num == 1 && typ == protowire.BytesType: // UInt32Value
					return fields(v, func(num protowire.Number, typ protowire.Type, x uint64, _ []byte) error {
						if num == 1 && typ == protowire.VarintType {
							e.Status = uint32(x)
						}
						return nil
					})
				case (num == 2 || num == 3) && typ == protowire.VarintType:
					e.BytesOut += x
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	if e.Route == "" {
		e.Route = UnmatchedRoute
	}
	e.Method = methodName(corev3.RequestMethod(method))
	switch {
	case hasLastDownTx:
		e.Duration = lastDownTx
	case hasDuration:
		e.Duration = durationField
	}
	if hasUpRx {
		e.HasUpstream = true
		e.Upstream = upRx
		if hasUpTx && upTx <= upRx {
			e.Upstream -= upTx
		}
	}
	e.ErrorType = errorType(flags, e.Status)
	t := alsdata.AccessLogType(logType)
	return !intermediate && (t == alsdata.AccessLogType_NotSet || t == alsdata.AccessLogType_DownstreamEnd), nil
}

// The range of a valid google.protobuf.Timestamp (0001-01-01 to 9999-12-31).
const (
	minTimestamp = -62135596800
	maxTimestamp = 253402300799
)

// secsNanos reads a Timestamp or Duration message.
func secsNanos(b []byte) (secs int64, nanos int64, err error) {
	err = fields(b, func(num protowire.Number, typ protowire.Type, x uint64, _ []byte) error {
		if typ != protowire.VarintType {
			return nil
		}
		switch num {
		case 1:
			secs = int64(x)
		case 2:
			nanos = int64(int32(x))
		}
		return nil
	})
	return secs, nanos, err
}

// durationOf reads a Duration as dur does (negative values are zero).
func durationOf(b []byte) (time.Duration, error) {
	s, n, err := secsNanos(b)
	if err != nil {
		return 0, err
	}
	d := time.Duration(s)*time.Second + time.Duration(n)
	if d < 0 {
		return 0, nil
	}
	return d, nil
}

// decodeMetadata reads filter_metadata["envoy.filters.http.ext_authz"] string fields.
func decodeMetadata(b []byte, e *Entry) error {
	return fields(b, func(num protowire.Number, typ protowire.Type, _ uint64, v []byte) error {
		if num != 1 || typ != protowire.BytesType { // filter_metadata map entry
			return nil
		}
		var key, st []byte
		err := fields(v, func(num protowire.Number, typ protowire.Type, _ uint64, v []byte) error {
			if typ == protowire.BytesType {
				switch num {
				case 1:
					key = v
				case 2:
					st = v
				}
			}
			return nil
		})
		if err != nil || string(key) != ExtAuthzNamespace {
			return err
		}
		return fields(st, func(num protowire.Number, typ protowire.Type, _ uint64, v []byte) error {
			if num != 1 || typ != protowire.BytesType { // Struct.fields map entry
				return nil
			}
			var name, val []byte
			var isString bool
			err := fields(v, func(num protowire.Number, typ protowire.Type, _ uint64, v []byte) error {
				if typ != protowire.BytesType {
					return nil
				}
				switch num {
				case 1:
					name = v
				case 2: // Value: string_value is field 3
					val, isString = nil, false
					return fields(v, func(num protowire.Number, typ protowire.Type, _ uint64, v []byte) error {
						if typ == protowire.BytesType && num == 3 {
							val, isString = v, true
						} else {
							val, isString = nil, false // a later oneof member wins
						}
						return nil
					})
				}
				return nil
			})
			if err != nil || !isString {
				return err
			}
			switch string(name) {
			case "user_id":
				e.User = cleanDim(string(val))
			case "api_key_id":
				e.APIKey = cleanDim(string(val))
			case "tenant_id":
				e.Tenant = cleanDim(string(val))
			}
			return nil
		})
	})
}
