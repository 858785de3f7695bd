"""HTTP Basic authentication against the lab's users, and the API administrator."""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import TYPE_CHECKING, Any

from .responses import error_page

if TYPE_CHECKING:
    from ..lab import Lab

REALM = "protolab"


def credentials(request: Any) -> tuple[str, str] | None:
    """The (user, password) of an Authorization: Basic header, or None."""
    header = request.getHeader(b"Authorization")
    if not header:
        return None
    scheme, _, value = header.partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def is_admin(lab: Lab, user: str, password: str) -> bool:
    api = lab.config.api
    return (hmac.compare_digest(user.encode(), api.admin_user.encode())
            and hmac.compare_digest(password.encode(), api.admin_password.encode()))


def login(lab: Lab, request: Any, admin_ok: bool = False) -> str | None:
    """Who the request authenticates as (a lab user, or the administrator's name when
    `admin_ok`), journaled with the password masked; None without valid credentials."""
    if request.lab_user:  # already checked for this request (before its body arrived)
        return request.lab_user
    given = credentials(request)
    if given is None:
        return None
    user, password = given
    session = request.channel.session
    if admin_ok and user == lab.config.api.admin_user:
        name = user if is_admin(lab, user, password) else None
    else:
        name = lab.credentials.check(user, password)  # the lab's one identity rule
    session.auth(name or user, name is not None, "Basic", secret=password)
    if name is not None:
        request.lab_user = name
        return name
    return None


def www_authenticate(realm: str) -> dict[bytes, bytes]:
    return {b"WWW-Authenticate": f'Basic realm="{realm}", charset="UTF-8"'.encode()}


def challenge(request: Any, realm: str = REALM, message: str = "") -> bytes:
    """401 asking the browser for a lab user's name and password."""
    return error_page(request, 401, message or "This area needs a lab user's name and password.",
                      www_authenticate(realm))


def cross_site(request: Any) -> bool:
    """Whether a request that changes something came from another site's page: a browser
    sends the lab's Basic credentials with any site's form post to it, so without this
    check a page anywhere could switch a fault on in the class's lab (CSRF). Browsers send
    Origin (and Sec-Fetch-Site) on such posts; curl and scripts send neither, and pass."""
    if request.getHeader(b"Sec-Fetch-Site") in (b"cross-site", b"same-site"):
        return True
    origin = request.getHeader(b"Origin")
    if origin is None:
        return False
    host = request.getHeader(b"Host") or b""
    return origin.partition(b"://")[2].lower() != host.lower()
