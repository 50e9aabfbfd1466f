#include "migration/protocol.h"

#include <algorithm>
#include <cassert>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "migration/wire/frame_codec.h"
#include "migration/wire/frame_format.h"
#include "migration/wire/frame_io.h"

namespace livemig {

std::string NewMigrationId() {
  std::random_device rd;
  return absl::StrCat(absl::Hex(rd(), absl::kZeroPad8), absl::Hex(rd(), absl::kZeroPad8),
                      absl::Hex(rd(), absl::kZeroPad8));
}

proto::Hello MakeHello(proto::Role role, uint32_t channel_index,
                       uint32_t channel_count, const std::string& migration_id) {
  proto::Hello hello;
  hello.set_magic(wire::kHelloMagic);
  hello.set_protocol_version(wire::kProtocolVersion);
  hello.set_min_version(wire::kProtocolVersion);
  hello.set_max_version(wire::kProtocolVersion);
  hello.set_page_size(kMigrationPageSize);
  hello.set_features(kSupportedFeatures);
  hello.set_migration_id(migration_id);
  hello.set_channel_index(channel_index);
  hello.set_channel_count(channel_count);
  hello.set_role(role);
  hello.set_software("livemig");
  return hello;
}

absl::Status CheckHello(const proto::Hello& hello, proto::Role expected_role) {
  if (hello.magic() != wire::kHelloMagic) {
    return absl::DataLossError(absl::StrCat(
        "hello magic is 0x", absl::Hex(hello.magic()), ", expected 0x",
        absl::Hex(wire::kHelloMagic), ": not a livemig peer"));
  }
  if (hello.max_version() < wire::kProtocolVersion ||
      hello.min_version() > wire::kProtocolVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "peer speaks protocol versions ", hello.min_version(), "..",
        hello.max_version(), "; this build speaks ", wire::kProtocolVersion));
  }
  if ((hello.features() & proto::FEATURE_PAGE_HASHES) == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "peer does not offer FEATURE_PAGE_HASHES (features 0x", absl::Hex(hello.features()),
        "), which protocol version ", wire::kProtocolVersion, " requires"));
  }
  if (hello.page_size() != kMigrationPageSize) {
    return absl::InvalidArgumentError(absl::StrCat(
        "peer page size ", hello.page_size(), ", expected ", kMigrationPageSize));
  }
  if (hello.role() != expected_role) {
    return absl::InvalidArgumentError(absl::StrCat(
        "peer role ", proto::Role_Name(hello.role()), ", expected ",
        proto::Role_Name(expected_role)));
  }
  if (hello.channel_count() == 0 || hello.channel_index() >= hello.channel_count()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "channel index ", hello.channel_index(), " of ", hello.channel_count()));
  }
  if (hello.migration_id().size() > kMaxMigrationIdLength) {
    return absl::InvalidArgumentError(absl::StrCat("migration id of ",
                                                   hello.migration_id().size(),
                                                   " bytes; at most ", kMaxMigrationIdLength));
  }
  return absl::OkStatus();
}

proto::Compression CompressionToWire(wire::Codec codec) {
  switch (codec) {
    case wire::Codec::kNone:
      return proto::COMPRESSION_NONE;
    case wire::Codec::kZstd:
      return proto::COMPRESSION_ZSTD;
    case wire::Codec::kLz4:
      return proto::COMPRESSION_LZ4;
  }
  return proto::COMPRESSION_UNSPECIFIED;
}

absl::StatusOr<wire::Codec> CodecFromWire(proto::Compression compression) {
  switch (compression) {
    case proto::COMPRESSION_UNSPECIFIED:
    case proto::COMPRESSION_NONE:
      return wire::Codec::kNone;
    case proto::COMPRESSION_ZSTD:
      return wire::Codec::kZstd;
    case proto::COMPRESSION_LZ4:
      return wire::Codec::kLz4;
    default:
      return absl::FailedPreconditionError(absl::StrCat(
          "peer names compression ", static_cast<int>(compression),
          ", which this build does not know (it speaks zstd and lz4)"));
  }
}

proto::Encoding EncodingFor(wire::Codec codec) {
  assert(codec != wire::Codec::kNone);
  return codec == wire::Codec::kZstd ? proto::ENCODING_ZSTD : proto::ENCODING_LZ4;
}

void OfferCompression(const wire::CompressionSpec& spec, proto::Hello* hello) {
  if (spec.codec == wire::Codec::kNone) return;
  hello->set_features(hello->features() & ~uint64_t{proto::FEATURE_TORN_PAGES});
  hello->set_compression(CompressionToWire(spec.codec));
  hello->set_compression_level(static_cast<uint32_t>(wire::EffectiveLevel(spec)));
}

uint64_t AgreedFeatures(const proto::Hello& source_hello) {
  uint64_t features = source_hello.features() & kSupportedFeatures;
  const bool compresses = source_hello.compression() != proto::COMPRESSION_UNSPECIFIED &&
                          source_hello.compression() != proto::COMPRESSION_NONE;
  if (compresses) features &= ~uint64_t{proto::FEATURE_TORN_PAGES};
  return features;
}

absl::Status CheckCompressionRequest(const proto::Hello& hello,
                                     absl::Span<const wire::Codec> accepted) {
  LIVEMIG_ASSIGN_OR_RETURN(const wire::Codec asked, CodecFromWire(hello.compression()));
  if (asked == wire::Codec::kNone) return absl::OkStatus();
  std::string list;
  for (wire::Codec c : accepted) {
    if (c == asked) return absl::OkStatus();
    if (c == wire::Codec::kNone) continue;
    absl::StrAppend(&list, list.empty() ? "" : ", ", wire::CodecName(c));
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "the source asks for ", wire::CodecName(asked),
      " compression; this destination accepts ", list.empty() ? "no compression" : list));
}

absl::Status CheckCompressionAnswer(const proto::Hello& reply, wire::Codec asked) {
  if (asked == wire::Codec::kNone) return absl::OkStatus();
  absl::StatusOr<wire::Codec> answered = CodecFromWire(reply.compression());
  if (answered.ok() && *answered == asked) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "the destination does not accept ", wire::CodecName(asked),
      " compression (its Hello answers ",
      answered.ok() ? wire::CodecName(*answered) : "an unknown codec",
      "): send without compression, or with a codec it accepts"));
}

absl::StatusOr<uint64_t> CheckDestinationHello(const proto::Hello& reply,
                                                const proto::Hello& offered, wire::Codec codec) {
  LIVEMIG_RETURN_IF_ERROR(CheckHello(reply, proto::ROLE_DESTINATION));
  if (reply.migration_id() != offered.migration_id() ||
      reply.channel_index() != offered.channel_index() ||
      reply.channel_count() != offered.channel_count()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the destination's Hello answers for migration \"", PeerText(reply.migration_id()),
        "\", channel ", reply.channel_index(), " of ", reply.channel_count(),
        "; this is migration \"", offered.migration_id(), "\", channel ",
        offered.channel_index(), " of ", offered.channel_count()));
  }
  LIVEMIG_RETURN_IF_ERROR(CheckCompressionAnswer(reply, codec));
  const uint64_t agreed = offered.features() & reply.features();
  const auto require = [&](uint64_t feature, const char* name) -> absl::Status {
    if ((agreed & feature) != 0) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat(
        "the destination's Hello does not agree to ", name, " (features 0x",
        absl::Hex(reply.features()), "), which this source needs"));
  };
  LIVEMIG_RETURN_IF_ERROR(require(proto::FEATURE_ZERO_PAGES, "FEATURE_ZERO_PAGES"));
  if (offered.channel_count() > 1) {
    LIVEMIG_RETURN_IF_ERROR(require(proto::FEATURE_MULTI_CHANNEL, "FEATURE_MULTI_CHANNEL"));
  }
  return agreed;
}

absl::Status AckRefusal(const proto::Ack& ack, absl::string_view what) {
  if (ack.status_code() == 0) return absl::OkStatus();
  return absl::Status(StatusCodeFromWire(ack.status_code(), absl::StatusCode::kUnknown),
                      absl::StrCat("the destination refused ", what, ": ",
                                   PeerText(ack.message())));
}

proto::Abort AbortFromStatus(const absl::Status& status, proto::Role role) {
  proto::Abort abort;
  abort.set_code(static_cast<int32_t>(status.code()));
  abort.set_message(std::string(status.message()));
  abort.set_role(role);
  return abort;
}

std::string DefaultRegionFileName(uint32_t region_index) {
  return absl::StrCat("region-", region_index, ".mem");
}

void SendAbortBestEffort(Connection& conn, const absl::Status& status,
                         proto::Role role) {
  (void)wire::WriteLastFrame(conn, wire::FrameType::kAbort, AbortFromStatus(status, role),
                             absl::Seconds(1));
}

absl::StatusCode StatusCodeFromWire(int32_t code, absl::StatusCode fallback) {
  return code > 0 && code <= 16 ? static_cast<absl::StatusCode>(code) : fallback;
}

std::string PeerText(absl::string_view text) {
  std::string out;
  const size_t kept = std::min(text.size(), kMaxPeerText);
  out.reserve(kept);
  for (size_t i = 0; i < kept; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      absl::StrAppend(&out, "\\x", absl::Hex(c, absl::kZeroPad2));
    }
  }
  if (kept < text.size()) absl::StrAppend(&out, "... (", text.size() - kept, " more bytes)");
  return out;
}

absl::Status StatusFromAbort(const proto::Abort& abort) {
  return absl::Status(
      StatusCodeFromWire(abort.code(), absl::StatusCode::kAborted),
      absl::StrCat(kPeerAborted, PeerText(abort.message())));
}

bool IsFromAbort(const absl::Status& status) {
  return absl::StartsWith(status.message(), kPeerAborted);
}

absl::Status ReadExpected(Connection& conn, wire::FrameType type,
                          google::protobuf::MessageLite* out, absl::Duration timeout) {
  LIVEMIG_ASSIGN_OR_RETURN(wire::IncomingFrame frame, wire::ReadFrameStart(conn, timeout));
  return ParseExpected(frame, type, out);
}

std::optional<proto::Abort> FindAbort(absl::string_view bytes) {
  while (bytes.size() >= wire::kFrameHeaderSize) {
    absl::StatusOr<wire::FrameHeader> header = wire::DecodeFrameHeader(
        absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
    if (!header.ok()) return std::nullopt;
    const uint64_t size =
        wire::kFrameHeaderSize + uint64_t{header->message_len} + header->payload_len;
    if (size > bytes.size()) return std::nullopt;
    if (header->type == wire::FrameType::kAbort) {
      proto::Abort abort;
      if (wire::DecodeFrame(bytes.substr(0, size), &abort).ok()) return abort;
      return std::nullopt;
    }
    bytes.remove_prefix(size);
  }
  return std::nullopt;
}

absl::Status ParseExpected(const wire::IncomingFrame& frame, wire::FrameType type,
                           google::protobuf::MessageLite* out) {
  if (frame.header.type == wire::FrameType::kAbort) {
    proto::Abort abort;
    LIVEMIG_RETURN_IF_ERROR(wire::FinishFrame(frame, &abort));
    return StatusFromAbort(abort);
  }
  if (frame.header.type != type) {
    return absl::DataLossError(absl::StrCat("expected a ", wire::FrameTypeName(type),
                                            " frame, got ",
                                            wire::FrameTypeName(frame.header.type)));
  }
  return wire::FinishFrame(frame, out);
}

}  // namespace livemig
