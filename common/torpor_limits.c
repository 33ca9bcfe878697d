#include "torpor_limits.h"

#include <string.h>

static bool name_valid(const char *s, bool upper_ok)
{
    if (!s) return false;
    size_t n = strlen(s);
    if (n < 1 || n > TORPOR_NAME_LEN_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alnum =
            (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (upper_ok && c >= 'A' && c <= 'Z');
        if (i == 0 ? !alnum : !(alnum || c == '.' || c == '_' || c == '-')) return false;
    }
    return true;
}

bool limits_template_name_valid(const char *name) { return name_valid(name, false); }
bool limits_sandbox_id_valid(const char *id) { return name_valid(id, true); }
