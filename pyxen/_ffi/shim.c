/*
 * pyxen's C shim, compiled into pyxen._xen with the cffi declarations.
 *
 * A xentoollog logger that keeps the last error-level message of each
 * thread, so that a failing libxl/libxc call can be turned into a Python
 * exception carrying the library's own words (pyxen.errors).  Warnings and
 * below are dropped: libxl is chatty, and the exception wants the error.
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
    int n;

    (void)logger;
    if ( level < XTL_ERROR )
        return;
    vsnprintf(text, sizeof(text), format, al);
    n = snprintf(pyxen_msg, sizeof(pyxen_msg), "%s%s%s", context ? context : "",
                 context ? ": " : "", text);
    if ( errnoval >= 0 && n >= 0 && (size_t)n < sizeof(pyxen_msg) )
        snprintf(pyxen_msg + n, sizeof(pyxen_msg) - n, ": %s", strerror(errnoval));
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
