.intel_syntax noprefix
.code64
# Entry 0x000: counter. rdi=slice base, rsi=slice pages, rbx=index, rcx=counter,
#   r8=budget, r9=mmio base.
counter:
  test r8, r8
  jnz 1f
  mov r8, [r9]
  jmp counter
1:
  mov rax, rbx
  shl rax, 12
  mov [rdi+rax], rcx
  dec r8
  inc rbx
  cmp rbx, rsi
  jb counter
  xor ebx, ebx
  inc rcx
  jmp counter
.balign 64
# Entry 0x040: random. rdi=area base, rsi=area pages, rbx=xorshift state,
#   rcx=writes done, r8=budget, r9=mmio.
random:
  test r8, r8
  jnz 1f
  mov r8, [r9]
  jmp random
1:
  mov rax, rbx
  shl rax, 13
  xor rbx, rax
  mov rax, rbx
  shr rax, 7
  xor rbx, rax
  mov rax, rbx
  shl rax, 17
  xor rbx, rax
  mov rax, rbx
  xor edx, edx
  div rsi
  shl rdx, 12
  inc rcx
  mov [rdi+rdx], rcx
  dec r8
  jmp random
.balign 64
# Entry 0x080: probe. r9=mmio, r13=job count.
probe:
  mov r10, [r9+8]
  mov r11, [r9+16]
  mov r12, [r9+24]
  test r12, r12
  jz probe
  inc r13
1:
  cmp r10, r11
  jae 2f
  mov [r10], r13
  add r10, r12
  jmp 1b
2:
  mov [r9+32], r13
  jmp probe
