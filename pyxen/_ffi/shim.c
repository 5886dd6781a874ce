/*
 * pyxen's C shim, compiled into pyxen._xen with the cffi declarations.
 *
 * A xentoollog logger that collects the error-level messages each thread
 * logs since its last pyxen_clear_message(), so that a failing libxl/libxc
 * call becomes a Python exception carrying the library's own words
 * (pyxen.errors).  libxl logs the root cause first and its consequences
 * after ("cannot make domain"), so all of them are kept, oldest first, up to
 * the buffer's size.  Warnings and below are dropped.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xentoollog.h>

#define PYXEN_MSG_LEN 2048

static __thread char pyxen_msg[PYXEN_MSG_LEN];

static void pyxen_vmessage(xentoollog_logger *logger, xentoollog_level level,
                           int errnoval, const char *context,
                           const char *format, va_list al)
{
    char text[PYXEN_MSG_LEN];
    size_t used = strlen(pyxen_msg);
    int n;

    (void)logger;
    if ( level < XTL_ERROR || used + 2 >= sizeof(pyxen_msg) )
        return;
    vsnprintf(text, sizeof(text), format, al);
    n = snprintf(pyxen_msg + used, sizeof(pyxen_msg) - used, "%s%s%s%s",
                 used ? "\n" : "", context ? context : "", context ? ": " : "", text);
    if ( n < 0 )
        return;
    used = strlen(pyxen_msg);
    if ( errnoval >= 0 && used + 1 < sizeof(pyxen_msg) )
        snprintf(pyxen_msg + used, sizeof(pyxen_msg) - used, ": %s", strerror(errnoval));
}

static void pyxen_progress(xentoollog_logger *logger, const char *context,
                           const char *doing_what, int percent,
                           unsigned long done, unsigned long total)
{
    (void)logger; (void)context; (void)doing_what;
    (void)percent; (void)done; (void)total;
}

static void pyxen_destroy(xentoollog_logger *logger)
{
    free(logger);
}

static xentoollog_logger *pyxen_logger_new(void)
{
    xentoollog_logger *lg = calloc(1, sizeof(*lg));

    if ( !lg )
        return NULL;
    lg->vmessage = pyxen_vmessage;
    lg->progress = pyxen_progress;
    lg->destroy = pyxen_destroy;
    return lg;
}

static const char *pyxen_last_message(void)
{
    return pyxen_msg;
}

static void pyxen_clear_message(void)
{
    pyxen_msg[0] = '\0';
}
