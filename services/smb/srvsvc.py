"""The srvsvc named pipe (MS-SRVS) over IPC$: which shares a user sees, sans-IO.

impacket's own SRVSServer answers from one global share table (every share to everybody)
through a thread listening on a loopback TCP port per server. The lab's rule is per user
(services.smb.access): a user sees their home, `public` and IPC$ (hidden, as Windows
lists it), never another user's home. This is a small DCE/RPC connection-oriented server
(C706 chapter 12) for one pipe open: PDUs in through `send`, PDUs out through `recv`, as
impacket's pipe code expects of a socket. It uses impacket's NDR structures for the
srvsvc calls and its rpcrt headers, and answers the calls clients make when they list or
open shares: NetrShareEnum (smbclient -L, Explorer's view of \\\\server),
NetrShareGetInfo (Windows asks it on opening a share) and NetrServerGetInfo.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from impacket.dcerpc.v5 import rpcrt, srvs
from impacket.dcerpc.v5.dtypes import NULL
from impacket.uuid import uuidtup_to_bin

SRVSVC = uuidtup_to_bin(("4B324FC8-1670-01D3-1278-5A47BF6EE188", "3.0"))
NDR32 = uuidtup_to_bin(("8a885d04-1ceb-11c9-9fe8-08002b104860", "2.0"))
STYPE_DISKTREE, STYPE_IPC, STYPE_SPECIAL = 0, 3, 0x80000000
# Windows' error codes (MS-ERREF 2.2) in the calls' ErrorCode
ERROR_ACCESS_DENIED, ERROR_INVALID_LEVEL, NERR_NET_NAME_NOT_FOUND = 5, 124, 2310
ADMIN_LEVELS = (2, 502)  # share paths and permissions: administrators only, on Windows too
NCA_OP_RNG_ERROR, NCA_PROTO_ERROR = 0x1C010002, 0x1C01000B
PROVIDER_REJECTION, ABSTRACT_SYNTAX_NOT_SUPPORTED, TRANSFER_SYNTAXES_NOT_SUPPORTED = 2, 1, 2
MAX_PENDING = 64 * 1024  # unread answers kept for one open; past it the client is broken
BIND_ACK_HEADER = struct.Struct("<HHI")  # max_xmit_frag, max_recv_frag, assoc_group


@dataclass(frozen=True)
class Share:
    name: str  # as listed
    kind: int  # STYPE_*
    comment: str


class SrvsvcPipe:
    """One open of \\PIPE\\srvsvc: the shares of one session, a DCE/RPC association."""

    def __init__(self, shares: list[Share], server_name: str) -> None:
        self.shares, self.server_name = shares, server_name
        self._input = b""
        self._output = bytearray()
        self._bound = False
        self._max_fragment = 4280  # the client's max_recv_frag, once bound
        self.calls: list[str] = []  # what was asked, for the journal

    # --- what impacket's pipe code calls on the "socket" of a pipe open

    def send(self, data: bytes) -> int:
        self._input += data
        while len(self._input) >= 16:
            length = struct.unpack_from("<H", self._input, 8)[0]
            if length < 16 or len(self._input) > MAX_PENDING:
                raise OSError("not DCE/RPC")  # impacket answers STATUS_ACCESS_DENIED
            if len(self._input) < length:
                break
            pdu, self._input = self._input[:length], self._input[length:]
            self._output += self._answer(pdu)
            if len(self._output) > MAX_PENDING:
                raise OSError("answers not read")
        return len(data)

    sendall = send

    def recv(self, size: int) -> bytes:
        out = bytes(self._output[:size])
        del self._output[:size]
        return out

    def close(self) -> None:
        self._output.clear()

    # --- DCE/RPC

    def _answer(self, pdu: bytes) -> bytes:
        header = rpcrt.MSRPCHeader(pdu)
        kind = header["type"]
        if kind in (rpcrt.MSRPC_BIND, rpcrt.MSRPC_ALTERCTX):
            return self._bind(header, rpcrt.MSRPCBind(header["pduData"]))
        if kind == rpcrt.MSRPC_REQUEST and self._bound:
            request = rpcrt.MSRPCRequestHeader(pdu)
            return self._request(request)
        return self._fault(header["call_id"], NCA_PROTO_ERROR)

    def _bind(self, header: rpcrt.MSRPCHeader, bind: rpcrt.MSRPCBind) -> bytes:
        results, items = b"", bind["ctx_items"]
        for _ in range(bind["ctx_num"]):
            item = rpcrt.CtxItem(items)
            items = items[len(item):]
            result = rpcrt.CtxItemResult()
            result["TransferSyntax"] = NDR32 if item["AbstractSyntax"] == SRVSVC else b"\0" * 20
            if item["AbstractSyntax"] != SRVSVC:
                result["Result"], result["Reason"] = PROVIDER_REJECTION, ABSTRACT_SYNTAX_NOT_SUPPORTED
            elif item["TransferSyntax"] != NDR32:  # NDR64, bind-time feature negotiation
                result["Result"], result["Reason"] = PROVIDER_REJECTION, TRANSFER_SYNTAXES_NOT_SUPPORTED
                result["TransferSyntax"] = b"\0" * 20
            else:
                result["Result"], result["Reason"] = rpcrt.MSRPC_CONT_RESULT_ACCEPT, 0
                self._bound = True
            results += result.getData()
        self._max_fragment = max(1024, min(bind["max_rfrag"], 4280))
        is_bind = header["type"] == rpcrt.MSRPC_BIND
        secondary = b"\\PIPE\\srvsvc\0" if is_bind else b""
        body = BIND_ACK_HEADER.pack(4280, 4280, 0x53F0)
        body += struct.pack("<H", len(secondary)) + secondary
        body += b"\0" * (-(len(body) + 16) % 4)  # the results start 4-aligned
        body += struct.pack("<B3x", bind["ctx_num"]) + results
        kind = rpcrt.MSRPC_BINDACK if is_bind else rpcrt.MSRPC_ALTERCTX_R
        return _pdu(kind, rpcrt.PFC_FIRST_FRAG | rpcrt.PFC_LAST_FRAG, header["call_id"], body)

    def _request(self, request: rpcrt.MSRPCRequestHeader) -> bytes:
        opnum, call_id = request["op_num"], request["call_id"]
        calls = {15: self._share_enum, 16: self._share_get_info, 21: self._server_get_info}
        if opnum not in calls:
            self.calls.append(f"opnum {opnum} refused")
            return self._fault(call_id, NCA_OP_RNG_ERROR)
        try:
            stub = calls[opnum](request["pduData"]).getData()
        except Exception:  # impacket's NDR parser fails in many ways on a malformed stub
            self.calls.append(f"opnum {opnum} malformed")
            return self._fault(call_id, NCA_PROTO_ERROR)
        return self._response(call_id, request["ctx_id"], stub)

    def _response(self, call_id: int, context: int, stub: bytes) -> bytes:
        room = self._max_fragment - 24  # the response header
        pieces = [stub[at:at + room] for at in range(0, len(stub), room)] or [b""]
        out = b""
        for index, piece in enumerate(pieces):
            flags = (rpcrt.PFC_FIRST_FRAG if index == 0 else 0) | \
                (rpcrt.PFC_LAST_FRAG if index == len(pieces) - 1 else 0)
            body = struct.pack("<IHBB", len(stub) - index * room, context, 0, 0) + piece
            out += _pdu(rpcrt.MSRPC_RESPONSE, flags, call_id, body)
        return out

    def _fault(self, call_id: int, status: int) -> bytes:
        body = struct.pack("<IHBBI4x", 0, 0, 0, 0, status)
        return _pdu(rpcrt.MSRPC_FAULT, rpcrt.PFC_FIRST_FRAG | rpcrt.PFC_LAST_FRAG, call_id, body)

    # --- srvsvc calls

    def _share_enum(self, stub: bytes) -> srvs.NetrShareEnumResponse:
        request = srvs.NetrShareEnum(stub)
        level = request["InfoStruct"]["Level"]
        answer = srvs.NetrShareEnumResponse()
        answer["InfoStruct"]["Level"] = level
        answer["ResumeHandle"] = NULL
        self.calls.append(f"NetrShareEnum level {level}")
        if level not in (0, 1):
            # The union's tag is the level asked (clients check it), its pointer NULL.
            known = level in srvs.SHARE_ENUM_UNION.union
            answer["InfoStruct"]["Level"] = level if known else 1
            answer["InfoStruct"]["ShareInfo"]["tag"] = level if known else 1
            answer["InfoStruct"]["ShareInfo"][f"Level{level if known else 1}"] = NULL
            answer["TotalEntries"] = 0
            answer["ErrorCode"] = ERROR_ACCESS_DENIED if level in ADMIN_LEVELS else ERROR_INVALID_LEVEL
            return answer
        union = answer["InfoStruct"]["ShareInfo"]
        union["tag"] = level
        container = union[f"Level{level}"]
        container["EntriesRead"] = len(self.shares)
        for share in self.shares:
            info = srvs.SHARE_INFO_0() if level == 0 else srvs.SHARE_INFO_1()
            _fill(info, level, share)
            container["Buffer"].append(info)
        answer["TotalEntries"], answer["ErrorCode"] = len(self.shares), 0
        return answer

    def _share_get_info(self, stub: bytes) -> srvs.NetrShareGetInfoResponse:
        request = srvs.NetrShareGetInfo(stub)
        name, level = str(request["NetName"]).rstrip("\0"), request["Level"]
        answer = srvs.NetrShareGetInfoResponse()
        share = next((s for s in self.shares if s.name.lower() == name.lower()), None)
        self.calls.append(f"NetrShareGetInfo {name} level {level}")
        if share is None or level not in (0, 1, 501, 1005):
            known = level in srvs.SHARE_INFO.union
            answer["InfoStruct"]["tag"] = level if known else 1
            answer["InfoStruct"][srvs.SHARE_INFO.union[level if known else 1][0]] = NULL
            # A share the user may not open is "not found", whether or not it exists.
            answer["ErrorCode"] = (NERR_NET_NAME_NOT_FOUND if share is None else ERROR_ACCESS_DENIED
                                   if level in ADMIN_LEVELS else ERROR_INVALID_LEVEL)
            return answer
        answer["InfoStruct"]["tag"] = level
        _fill(answer["InfoStruct"][f"ShareInfo{level}"], level, share)
        answer["ErrorCode"] = 0
        return answer

    def _server_get_info(self, stub: bytes) -> srvs.NetrServerGetInfoResponse:
        request = srvs.NetrServerGetInfo(stub)
        level = request["Level"]
        self.calls.append(f"NetrServerGetInfo level {level}")
        answer = srvs.NetrServerGetInfoResponse()
        answer["InfoStruct"]["tag"] = 101
        if level not in (100, 101):
            answer["InfoStruct"]["ServerInfo101"] = NULL
            answer["ErrorCode"] = ERROR_INVALID_LEVEL
            return answer
        answer["InfoStruct"]["tag"] = level
        info = answer["InfoStruct"][f"ServerInfo{level}"]
        info[f"sv{level}_platform_id"] = 500  # PLATFORM_ID_NT
        info[f"sv{level}_name"] = self.server_name + "\0"
        if level == 101:
            info["sv101_version_major"], info["sv101_version_minor"] = 10, 0
            info["sv101_type"] = 0x00000003 | 0x00008000  # workstation, server, NT server
            info["sv101_comment"] = "protolab\0"
        answer["ErrorCode"] = 0
        return answer


def _fill(info: srvs.NDRSTRUCT, level: int, share: Share) -> None:
    """A SHARE_INFO_<level> for `share` (0: name; 1 and 501: type and comment; 1005: flags)."""
    prefix = f"shi{level}_"
    if level == 1005:
        info["shi1005_flags"] = 0x30 if share.kind & STYPE_IPC else 0  # no client-side caching
        return
    info[prefix + "netname"] = share.name + "\0"
    if level in (1, 501):
        info[prefix + "type"] = share.kind
        info[prefix + "remark"] = share.comment + "\0"
    if level == 501:
        info["shi501_flags"] = 0


def _pdu(kind: int, flags: int, call_id: int, body: bytes) -> bytes:
    """A connection-oriented PDU: the 16-byte common header (little-endian NDR) and body."""
    return struct.pack("<BBBB4sHHI", 5, 0, kind, flags, b"\x10\0\0\0", 16 + len(body), 0,
                       call_id) + body
