/*
 * xs-domain-preload.so: an LD_PRELOAD library for the lab's tests.
 *
 * With PYXEN_XS_DOMAIN=1 in its environment, every domain a program makes
 * through libxenctrl's xc_domain_create() is a Xenstore domain
 * (XEN_DOMCTL_CDF_xs_domain), as init-xenstore-domain makes a xenstore stub
 * domain: "xl create" then starts a guest that holds XSM_XS_PRIV, the
 * privilege of a de-privileged xenstore stub domain, without the stub's
 * build (init-xenstore-domain also takes dom0's xenbus backend over).
 * libxl has no setting for it.  Without the variable it changes nothing.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <xenctrl.h>

typedef int create_fn(xc_interface *, uint32_t *,
                      struct xen_domctl_createdomain *);

int xc_domain_create(xc_interface *xch, uint32_t *pdomid,
                     struct xen_domctl_createdomain *config)
{
    static create_fn *real;
    const char *on = getenv("PYXEN_XS_DOMAIN");

    if ( !real )
        real = (create_fn *)dlsym(RTLD_NEXT, "xc_domain_create");
    if ( !real )
    {
        errno = ENOSYS;
        return -1;
    }
    if ( on && !strcmp(on, "1") )
        config->flags |= XEN_DOMCTL_CDF_xs_domain;
    return real(xch, pdomid, config);
}
