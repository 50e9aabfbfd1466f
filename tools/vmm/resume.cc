#include "tools/vmm/resume.h"

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace livemig::vmm {
namespace {

uint64_t LoadU64(const uint8_t* p) {
  // Relaxed atomic load: the guest may be storing this word right now.
  return __atomic_load_n(reinterpret_cast<const uint64_t*>(p), __ATOMIC_RELAXED);
}

}  // namespace

CounterCheck CheckCounterMemory(const uint8_t* workload, const GuestLayout& layout,
                                int vcpus) {
  CounterCheck check;
  for (int s = 0; s < vcpus; ++s) {
    const CounterSlice slice = CounterSliceOf(layout, s, vcpus);
    const uint8_t* base = workload + (slice.gpa - layout.workload_gpa);
    const uint64_t first = LoadU64(base);
    uint64_t boundary = slice.pages;  // First page holding first - 1.
    for (uint64_t p = 1; p < slice.pages; ++p) {
      const uint64_t v = LoadU64(base + p * kPageSize);
      if (boundary == slice.pages) {
        if (v == first) continue;
        if (first != 0 && v == first - 1) {
          boundary = p;
          continue;
        }
      } else if (v == first - 1) {
        continue;
      }
      check.held = false;
      check.detail = absl::StrCat(
          "counter slice ", s, ": page ", p, " (GPA 0x",
          absl::Hex(slice.gpa + p * kPageSize), ") holds ", v, ", expected ",
          boundary == slice.pages ? absl::StrCat(first, " or ", first - 1)
                                  : absl::StrCat(first - 1),
          boundary == slice.pages ? std::string()
                                  : absl::StrCat(" (boundary at page ", boundary, ")"));
      return check;
    }
    const uint64_t progress =
        boundary == slice.pages ? first * slice.pages : (first - 1) * slice.pages + boundary;
    check.slice_progress.push_back(progress);
    check.progress += progress;
  }
  return check;
}

CounterCheck CheckCounterMemory(const KvmVm& vm) {
  const RamRegion& r0 = vm.ram()[0];
  return CheckCounterMemory(r0.host + (vm.layout().workload_gpa - r0.gpa), vm.layout(),
                            vm.vcpu_count());
}

std::string DescribeResume(const ResumeResult& result) {
  return absl::StrCat("resumed guest ran ", result.ran_ms, " ms, counter ",
                      result.counter_at_pause, " -> ", result.counter_after,
                      result.invariant_held ? ", invariant held"
                                            : absl::StrCat(", invariant BROKEN: ", result.detail));
}

bool CheckRegistersMatchMemory(const KvmVm& vm, const std::vector<VcpuRegs>& regs,
                               const CounterCheck& memory, std::string* detail) {
  for (size_t i = 0; i < regs.size(); ++i) {
    const CounterSlice slice =
        CounterSliceOf(vm.layout(), static_cast<int>(i), vm.vcpu_count());
    const uint64_t reg = CounterRegisterProgress(regs[i], slice.pages);
    const uint64_t mem = memory.slice_progress[i];
    if (mem != reg && mem != reg + 1) {
      absl::StrAppend(detail, "vCPU ", i, ": registers say progress ", reg,
                      " (counter ", regs[i].gpr[kRcx], ", page ", regs[i].gpr[kRbx],
                      "), memory says ", mem, "; ");
      return false;
    }
  }
  return true;
}

absl::StatusOr<ResumeResult> ResumeAndCheckRam(std::unique_ptr<KvmVm> vm,
                                               const ResumeOptions& options) {
  ResumeResult result;
  const bool counter = vm->pattern().pattern == Pattern::kCounter;
  auto store_count = [](const std::vector<VcpuRegs>& regs) {
    uint64_t n = 0;
    for (const VcpuRegs& r : regs) n += r.gpr[kRcx];
    return n;
  };
  bool held = true;
  if (counter) {
    const CounterCheck before = CheckCounterMemory(*vm);
    if (!before.held) {
      result.detail = absl::StrCat("received memory: ", before.detail);
      return result;
    }
    result.counter_at_pause = before.progress;
    held = CheckRegistersMatchMemory(*vm, vm->saved_regs(), before, &result.detail);
  } else {
    result.counter_at_pause = store_count(vm->saved_regs());
  }
  const absl::Time start = absl::Now();
  LIVEMIG_RETURN_IF_ERROR(vm->Start());
  for (;;) {
    const absl::Duration ran = absl::Now() - start;
    uint64_t progress;
    if (counter) {
      progress = CheckCounterMemory(*vm).progress;  // An estimate while running.
    } else {
      progress = result.counter_at_pause + vm->pages_granted();
    }
    if (ran >= options.run_for && progress >= result.counter_at_pause + options.min_progress) {
      break;
    }
    if (ran > options.hang_guard) break;
    LIVEMIG_RETURN_IF_ERROR(vm->health());
    absl::SleepFor(absl::Milliseconds(2));
  }
  LIVEMIG_RETURN_IF_ERROR(vm->Pause());
  result.ran_ms = absl::ToInt64Milliseconds(absl::Now() - start);
  LIVEMIG_RETURN_IF_ERROR(vm->health());
  if (counter) {
    const CounterCheck after = CheckCounterMemory(*vm);
    if (!after.held) {
      result.invariant_held = false;
      absl::StrAppend(&result.detail, "after running: ", after.detail);
      return result;
    }
    result.counter_after = after.progress;
    held = CheckRegistersMatchMemory(*vm, vm->saved_regs(), after, &result.detail) && held;
  } else {
    result.counter_after = store_count(vm->saved_regs());
  }
  if (result.counter_after < result.counter_at_pause + options.min_progress) {
    held = false;
    absl::StrAppend(&result.detail, "the guest advanced from ", result.counter_at_pause,
                    " to ", result.counter_after, ", less than ", options.min_progress,
                    " pages in ", result.ran_ms, " ms; ");
  }
  result.invariant_held = held;
  return result;
}

}  // namespace livemig::vmm
