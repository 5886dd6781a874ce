/* cffi cdef: xentoollog, and the shim's capturing logger (shim.c). */
typedef struct xentoollog_logger xentoollog_logger;

/* The shim's logger: keeps the last error-level message of each thread. */
xentoollog_logger *pyxen_logger_new(void);
const char *pyxen_last_message(void);
void pyxen_clear_message(void);
