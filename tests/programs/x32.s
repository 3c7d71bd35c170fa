# A valid 32-bit x86 ELF that kiln must refuse (exit 126): exit(0) via int 0x80.
.globl _start
_start:
    movl $1, %eax
    xorl %ebx, %ebx
    int $0x80
