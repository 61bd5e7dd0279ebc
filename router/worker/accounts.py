"""Which company an event's person belongs to.

An account comes from, in order of trust: a Segment/RudderStack ``group`` call
(its domain or website trait, else its group id), the email's domain (never
a free-mail domain such as gmail.com), or a company name given in a form or
identify call (normalised, so "Acme, Inc." and "ACME" are one account).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from models import Event, EventType
from rules.accounts import normalise_company, normalise_domain

# Consumer mailbox providers: their domains never identify a company.
FREE_MAIL: frozenset[str] = frozenset("""
gmail.com googlemail.com yahoo.com yahoo.co.uk yahoo.fr yahoo.de yahoo.es yahoo.it yahoo.co.jp yahoo.com.br
yahoo.co.in ymail.com rocketmail.com hotmail.com hotmail.co.uk hotmail.fr hotmail.de hotmail.it hotmail.es
outlook.com outlook.fr outlook.de live.com live.co.uk live.fr msn.com windowslive.com aol.com aim.com
icloud.com me.com mac.com protonmail.com proton.me pm.me tutanota.com tuta.io fastmail.com fastmail.fm
hey.com zoho.com zohomail.com yandex.com yandex.ru ya.ru mail.ru inbox.ru list.ru bk.ru rambler.ru gmx.com
gmx.de gmx.net gmx.at gmx.ch web.de t-online.de freenet.de arcor.de posteo.de mailbox.org orange.fr
wanadoo.fr free.fr sfr.fr laposte.net libero.it virgilio.it alice.it tiscali.it qq.com 163.com 126.com
sina.com sohu.com yeah.net naver.com daum.net hanmail.net rediffmail.com comcast.net verizon.net att.net
sbcglobal.net bellsouth.net cox.net charter.net earthlink.net optonline.net btinternet.com sky.com
virginmedia.com ntlworld.com talktalk.net bigpond.com optusnet.com.au shaw.ca rogers.com sympatico.ca
uol.com.br bol.com.br terra.com.br ig.com.br seznam.cz wp.pl o2.pl interia.pl onet.pl mail.com email.com
usa.com inbox.com hushmail.com mailinator.com guerrillamail.com 10minutemail.com
""".split())


AccountSource = Literal["group", "email_domain", "company_name"]
"""What tied an event to its account: a group call, the email's domain, or the company name."""


@dataclass(frozen=True, slots=True)
class AccountRef:
    account_id: str  # "d:<domain>", "g:<group id>" or "n:<normalised name>"
    name: str
    domain: str
    source: AccountSource

    @property
    def key_id(self) -> str:
        """A digest safe inside a Redis hash tag."""
        return hashlib.sha256(self.account_id.encode()).hexdigest()[:24]


def email_domain(email: str | None) -> str | None:
    if not email or "@" not in email:
        return None
    return normalise_domain(email.rsplit("@", 1)[1])


def is_free_mail(domain: str) -> bool:
    return domain in FREE_MAIL


def account_for(event: Event) -> AccountRef | None:
    """The account this event tells us about, or None when it says nothing."""
    traits = event.traits
    if event.type is EventType.GROUP:
        raw = traits.get("domain") or traits.get("website")
        domain = normalise_domain(raw) if raw else None
        name = traits.get("name") or traits.get("company") or ""
        if domain and not is_free_mail(domain):
            return AccountRef(f"d:{domain}", name or domain, domain, "group")
        if event.group_id:
            return AccountRef(f"g:{event.group_id}", name or event.group_id, "", "group")
    domain = email_domain(event.email)
    company = event.fields.get("company") or traits.get("company") or ""
    if domain and not is_free_mail(domain):
        return AccountRef(f"d:{domain}", company or domain, domain, "email_domain")
    if company:
        norm = normalise_company(company)
        if norm:
            return AccountRef(f"n:{norm}", company, "", "company_name")
    return None
