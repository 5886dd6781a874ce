/* cffi cdef: libc pieces the bindings need (freeing what the libraries malloc). */
void free(void *ptr);
char *strdup(const char *s);
