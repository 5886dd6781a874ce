/*
 * tinyguest: entry point and Xen ELF notes of a minimal 64-bit PV guest.
 *
 * The domain builder (libelf, "generic" loader) reads the notes below,
 * maps the image 1:1 at virt_base 0 (so pfn N is virtual address N << 12),
 * and enters _start in long mode with %rsi = start_info and events masked.
 */
#include <xen/elfnote.h>

/* One Xen ELF note: name "Xen", a type, and a descriptor (any directives). */
.macro ELFNOTE type:req, desc:vararg
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 2f - 1f           /* namesz */
    .long 4f - 3f           /* descsz */
    .long \type
1:  .asciz "Xen"
2:  .balign 4
3:  \desc
4:  .balign 4
    .popsection
.endm

ELFNOTE XEN_ELFNOTE_GUEST_OS,      .asciz "pyxen-tinyguest"
ELFNOTE XEN_ELFNOTE_GUEST_VERSION, .asciz "1"
ELFNOTE XEN_ELFNOTE_LOADER,        .asciz "generic"
ELFNOTE XEN_ELFNOTE_XEN_VERSION,   .asciz "xen-3.0"
ELFNOTE XEN_ELFNOTE_VIRT_BASE,     .quad 0
ELFNOTE XEN_ELFNOTE_PADDR_OFFSET,  .quad 0
ELFNOTE XEN_ELFNOTE_ENTRY,         .quad _start
ELFNOTE XEN_ELFNOTE_FEATURES,      .asciz "!writable_page_tables"

    .section .text.head, "ax", @progbits
    .code64
    .globl _start
    .type _start, @function
_start:
    lea     boot_stack_top(%rip), %rsp
    mov     %rsi, %rdi              /* guest_main(start_info) */
    call    guest_main
    ud2                             /* guest_main never returns */
    .size _start, . - _start

    .section .bss.stack, "aw", @nobits
    .balign 16
boot_stack:
    .skip 8192
    .globl boot_stack_top
boot_stack_top:

    .section .note.GNU-stack, "", @progbits
