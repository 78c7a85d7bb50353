"""PgBouncer's auth_query: how tenant roles log in through the pooler without a userlist.

Every tenant role, from the stack config or made at run time by tenant_admin,
is looked up by PgBouncer's ``auth_user`` through
``pgplatform_auth.tenant_login`` (sql/schema/V0012), a SECURITY DEFINER function
owned by the owner role that answers for tenant roles only. So the auth file
holds a constant number of entries whatever the tenant count, and a tenant
logs in through the pooler as soon as the apply that made its role commits.

PgBouncer can log in to the server as ``auth_user`` only with its password in
the auth file (a SCRAM verifier lets it check a client, not prove itself), so
that one entry is the password: the auth file is then a secret file (0600,
the service user's, in the stack's ``secrets`` folder), and the role it
names may do nothing but call the lookup.
"""

from __future__ import annotations

from infra.errors import RenderError

AUTH_QUERY = "SELECT usename, passwd FROM pgplatform_auth.tenant_login($1)"


def auth_user_entry(user: str, password: str) -> str:
    """The auth file line for `user`, PgBouncer's auth_user, with its password."""
    if not password or any(c in user + password for c in '"\n\r\\ '):
        raise RenderError(f"auth file entry for {user!r}: the name and password must be "
                          "non-empty, one line, without quotes, backslashes or spaces")
    return f'"{user}" "{password}"\n'
