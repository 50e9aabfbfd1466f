// File: tools/cli/guest_memory_flags.h
//
// The guest memory `livemig send` migrates, as its flags describe it:
//
//   --memory=SIZE           one anonymous region of SIZE at guest address 0
//   --region=gpa=ADDR,size=SIZE[,file=PATH,offset=OFF,name=REL]   (repeatable)
//                           a region at ADDR: anonymous, or PATH mapped
//                           MAP_SHARED from OFF (default 0); the receiver
//                           rebuilds it as REL under its --dir (default: the
//                           last component of PATH). name= needs file=.
//   --fill=random|zero|text|keep   the initial content of every region;
//                           without it, anonymous regions get random bytes
//                           and file= regions keep their file's content
//
// Sizes and addresses use the units.h size grammar. Regions are sorted by
// guest address; two regions the receiver would rebuild under one name must
// map the same source file (by device and inode), else the second one needs
// name=REL.
//
// Errors: every flag mistake is InvalidArgument, its message naming the flag
// as given; a file= that does not exist is NotFound (from FileOffset::Open);
// other mapping failures keep the code core/ gives them. Messages are the
// CLI's own and are asserted by tests: change them together.
//
// The functions take the flags' values, not absl flags, so they can be tested.
// Thread safety: pure, except BuildMemory, which maps memory and writes one
// progress line to stderr.
#ifndef LIVEMIG_TOOLS_CLI_GUEST_MEMORY_FLAGS_H_
#define LIVEMIG_TOOLS_CLI_GUEST_MEMORY_FLAGS_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/atomic_bitmap.h"
#include "core/guest_memory.h"

namespace livemig::cli {

// One region as a flag describes it (--memory gives one with no file).
struct RegionFlag {
  uint64_t gpa = 0;
  uint64_t size = 0;
  std::string file;  // Empty: anonymous.
  uint64_t offset = 0;
  std::string name;  // Where the receiver rebuilds it, relative to its --dir.
  std::string text;  // The flag as given, for messages.
};

// Parses the value of one --region flag (without "--region="). Checks the
// keys and their values only, not that sizes are page multiples nor that
// the file exists.
[[nodiscard]] absl::StatusOr<RegionFlag> ParseRegionFlag(const std::string& text);

// InvalidArgument if two of `specs` share a name but not a source file.
// REQUIRES: `specs` sorted by gpa (the message names the later one first).
[[nodiscard]] absl::Status CheckNamesAreDistinct(const std::vector<RegionFlag>& specs);

// The values of the flags above, as given.
struct GuestMemoryFlags {
  std::vector<std::string> regions;  // Every --region value, in order.
  std::string memory;                // --memory; empty: not given.
  std::string fill;                  // --fill; empty: not given.
};

// The bytes of guest memory the flags declare (before anything is mapped);
// 0 if a flag cannot be parsed (BuildMemory then says why).
uint64_t DeclaredBytes(const GuestMemoryFlags& flags);

// Maps the regions the flags describe, calls `before_fill` (which may fail;
// its error is returned as is), then fills them: everything a flag can get
// wrong is found before it. Appends one entry per region, in guest-address
// order, to `*file_names`: its name= for a file region, "" for an anonymous
// one. Prints "livemig: filling ..." to stderr unless --fill=keep. Filling
// writes through the regions' raw pointers: nothing is marked dirty.
[[nodiscard]] absl::StatusOr<GuestMemory<AtomicBitmap>> BuildMemory(
    const GuestMemoryFlags& flags, std::vector<std::string>* file_names,
    const std::function<absl::Status()>& before_fill);

}  // namespace livemig::cli

#endif  // LIVEMIG_TOOLS_CLI_GUEST_MEMORY_FLAGS_H_
