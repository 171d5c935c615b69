// A strict structural pass over protobuf wire bytes, before protobuf-c
// unpacks them. protobuf-c accepts a singular field that appears twice and
// keeps the last (merging embedded messages), so a checker that reads one
// occurrence and CRIU, which reads the other, would disagree about the same
// bytes. Here every message must have one reading only.
#pragma once

#include <protobuf-c/protobuf-c.h>

#include <cstddef>
#include <optional>
#include <span>
#include <string>

namespace rfork::agent {

// Returns why `wire` is not strictly one `type` message, or nullopt if it is:
// - a singular (required or optional) field, or a second member of a oneof,
//   appears at most once, in every embedded message too;
// - each field's wire type is the one its declared type uses (a repeated
//   number may also come packed), and varints fit the declared type;
// - required fields are present, lengths stay inside their message, and
//   messages nest at most `max_depth` deep.
// Field numbers the descriptor does not know are skipped (CRIU skips them
// too, and a newer CRIU adds fields), except inside the messages in `closed`:
// there an unknown field might mean something the checker cannot judge.
std::optional<std::string> strict_protobuf_problem(const ProtobufCMessageDescriptor& type,
                                                   std::span<const unsigned char> wire,
                                                   std::span<const ProtobufCMessageDescriptor* const> closed = {},
                                                   int max_depth = 16);

}  // namespace rfork::agent
