#include "template_limits.h"

#include <string.h>

#include "torpor_limits.h"

bool template_package_name_valid(const char *name)
{
    if (!name) return false;
    size_t n = strlen(name);
    if (n < 2 || n > TEMPLATE_PACKAGE_NAME_MAX) return false;
    if (!((name[0] >= 'a' && name[0] <= 'z') || (name[0] >= '0' && name[0] <= '9'))) return false;
    for (size_t i = 1; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

bool template_is_builtin(const char *name)
{
    return name && (strcmp(name, "debian") == 0 || strcmp(name, "minimal") == 0);
}

bool template_user_name_allowed(const char *name)
{
    return limits_template_name_valid(name) && !template_is_builtin(name) &&
           strncmp(name, TEMPLATE_IMAGE_PREFIX, strlen(TEMPLATE_IMAGE_PREFIX)) != 0;
}
