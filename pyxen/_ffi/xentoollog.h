/* cffi cdef: xentoollog, and the shim's capturing loggers (shim.c). */
typedef struct xentoollog_logger xentoollog_logger;

/*
 * The shim's loggers keep the error-level messages logged since they were
 * last cleared: per handle (a libxl context's, whichever thread logs) or
 * per thread (pyxen_last_message()).
 */
#define PYXEN_LOG_PER_THREAD ...
#define PYXEN_LOG_PER_HANDLE ...
#define PYXEN_MSG_LEN ...
xentoollog_logger *pyxen_logger_new(int per_handle);
void pyxen_logger_free(xentoollog_logger *logger);
size_t pyxen_logger_message(xentoollog_logger *logger, char *out, size_t size);
void pyxen_logger_clear(xentoollog_logger *logger);
const char *pyxen_last_message(void);
void pyxen_clear_message(void);
