/* template_limits: what a custom template's recipe may hold, checked by the
 * control plane (400 before anything is stored) and again by the agent
 * (INVALID_ARGUMENT), so neither trusts the other (docs/templates.md).
 *
 * Contract: pure functions, no allocation. */
#ifndef TORPOR_TEMPLATE_LIMITS_H
#define TORPOR_TEMPLATE_LIMITS_H

#include <stdbool.h>

#define TEMPLATE_PACKAGES_MAX 64       /* extra packages per template */
#define TEMPLATE_PACKAGE_NAME_MAX 128  /* characters of one package name */
#define TEMPLATE_SETUP_MAX (64 * 1024) /* bytes of setup script */
#define TEMPLATE_IMAGE_PREFIX "tpl-"   /* image names of custom templates; no user name starts so */

/* Debian package-name syntax (policy 5.6.1): ^[a-z0-9][a-z0-9+.-]+$, at most
 * TEMPLATE_PACKAGE_NAME_MAX characters. */
bool template_package_name_valid(const char *name);

/* A name a team may give its template: limits_template_name_valid, not a
 * built-in one ("debian", "minimal") and not starting with
 * TEMPLATE_IMAGE_PREFIX. */
bool template_user_name_allowed(const char *name);

/* "debian" and "minimal": public, reserved, never deleted through the API. */
bool template_is_builtin(const char *name);

#endif
