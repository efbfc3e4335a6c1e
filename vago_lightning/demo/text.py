"""Hungarian text of the two demo corpora: a quiz show and a conversational interview.

Real sentences with accents, numbers and questions, so that cleaning, tokenizing, the length
filters and the category split meet what a real Hungarian corpus gives them. The quiz lines are
written out; the interview lines are composed from clauses by a seeded generator, which gives the
seed workflow's mix of short, medium and long (7-10 s) clips.
"""

from __future__ import annotations

import random

# ---------------------------------------------------------------------------------------------
# Quiz show: seven kinds of lines, as in the Milliomos corpus.

QUIZ_GREETINGS = [
    "Jó estét kívánok, kedves nézők, üdvözlöm Önöket a stúdióban!",
    "Kezdődik a játék, amelyben ma este valaki milliomos lehet.",
    "Üdvözlöm a mai játékosunkat, aki Debrecenből érkezett hozzánk.",
    "Mielőtt elkezdenénk, elmondom a szabályokat.",
    "Tizenöt kérdés választja el a főnyereménytől.",
    "Köszönöm, hogy ma este is velünk voltak, viszontlátásra!",
    "A reklám után folytatjuk, maradjanak velünk!",
    "Ismét itt vagyunk, és a játékosunk még mindig versenyben van.",
]

QUIZ_QUESTIONS = [
    "Melyik folyó szeli ketté Budapestet?",
    "Hány lába van egy póknak?",
    "Ki írta az Egri csillagok című regényt?",
    "Melyik évben volt a honfoglalás a hagyomány szerint?",
    "Mi a fővárosa Ausztráliának?",
    "Hány perc van egy napban?",
    "Melyik bolygó van a legközelebb a Naphoz?",
    "Ki komponálta a Magyar rapszódiákat?",
    "Melyik magyar tó a legnagyobb Közép-Európában?",
    "Hány játékos van egy futballcsapatban a pályán?",
    "Melyik elem vegyjele az Au?",
    "Ki volt az első ember a Holdon?",
    "Milyen színű a smaragd?",
    "Melyik hónapban van a nemzeti ünnepünk, március tizenötödike?",
    "Hány fokon forr a víz normál légköri nyomáson?",
    "Melyik városban található a Hősök tere?",
    "Ki festette a Mona Lisát?",
    "Mi a neve a magyar himnusz szerzőjének?",
    "Melyik állat a leggyorsabb szárazföldi emlős?",
    "Hány oldala van egy hatszögnek?",
    "Melyik országban található a Machu Picchu?",
    "Ki találta fel a golyóstollat?",
    "Melyik évben nyitották meg a budapesti metrót?",
    "Mi a legmagasabb hegy a Földön?",
    "Hány napból áll egy szökőév?",
    "Melyik híres magyar feltaláló nevéhez fűződik a Rubik-kocka?",
]

QUIZ_OPTIONS = [
    "A: a Duna, B: a Tisza, C: a Dráva, D: a Rába.",
    "A: hat, B: nyolc, C: tíz, D: tizenkettő.",
    "A: Jókai Mór, B: Mikszáth Kálmán, C: Gárdonyi Géza, D: Móricz Zsigmond.",
    "A: 796, B: 896, C: 996, D: 1096.",
    "A: Sydney, B: Melbourne, C: Canberra, D: Perth.",
    "A: 1440, B: 1200, C: 3600, D: 960.",
    "A: a Vénusz, B: a Mars, C: a Merkúr, D: a Jupiter.",
    "A: Bartók Béla, B: Liszt Ferenc, C: Kodály Zoltán, D: Erkel Ferenc.",
    "A: a Velencei-tó, B: a Fertő, C: a Tisza-tó, D: a Balaton.",
    "A: kilenc, B: tíz, C: tizenegy, D: tizenkettő.",
    "A: ezüst, B: arany, C: alumínium, D: argon.",
    "A: Jurij Gagarin, B: Neil Armstrong, C: Buzz Aldrin, D: John Glenn.",
]

QUIZ_PRIZES = [
    "Következik az 5 000 forintos kérdés.",
    "Most a 10 000 forintos kérdés jön.",
    "Itt a 25 000 forintos kérdés, figyeljen jól!",
    "Az 50 000 forintért következő kérdés már nehezebb.",
    "Elérkeztünk a 100 000 forintos kérdéshez, ez az első biztos pont.",
    "200 000 forint a tét.",
    "400 000 forintért szól a következő kérdés.",
    "Most 800 000 forintról van szó.",
    "1 500 000 forint a következő kérdés értéke.",
    "3 000 000 forint, ez a második biztos pont!",
    "5 000 000 forintért kérdezem.",
    "10 000 000 forint, gondolja át alaposan!",
    "20 000 000 forint a tét, ez már komoly összeg.",
    "Ez az utolsó kérdés, 40 000 000 forintért!",
]

QUIZ_CORRECT = [
    "Helyes válasz, gratulálok!",
    "Így van, ez a jó megoldás!",
    "Pontosan, tovább is jutott a következő szintre.",
    "Helyes! Ön most nyert 100 000 forintot.",
    "Remek, ezt nagyon jól tudta!",
    "Ez bizony a helyes válasz, a közönség is tapsol.",
    "Nagyszerű, már csak három kérdés van hátra!",
    "Gratulálok, Ön ma este milliomos lett!",
]

QUIZ_WRONG = [
    "Sajnos ez nem a helyes válasz.",
    "Nagyon sajnálom, de a jó megoldás a C lett volna.",
    "Ezzel sajnos véget ért a mai játék.",
    "Nem, ez nem talált, de a biztos pontot hazaviheti.",
    "Sajnos tévedett, pedig egészen közel járt.",
    "Kár érte, ez most nem sikerült.",
]

QUIZ_LIFELINES = [
    "Kéri a telefonos segítséget?",
    "Rendben, hívjuk fel a barátját, harminc másodperce van.",
    "Felezzünk! A gép most elvesz két rossz választ.",
    "Kérdezzük meg a közönséget, szavazzanak!",
    "A közönség hatvanhét százaléka a B választ jelölte meg.",
    "Még két segítsége maradt, használja ki őket okosan.",
    "Megjelölhetem ezt a választ véglegesnek?",
    "Biztos benne, hogy ez a végső válasza?",
]


def quiz_sentences() -> list[str]:
    """The quiz-show corpus: 80 lines in seven kinds, in a fixed order."""
    return QUIZ_GREETINGS + QUIZ_QUESTIONS + QUIZ_OPTIONS + QUIZ_PRIZES + QUIZ_CORRECT + QUIZ_WRONG + QUIZ_LIFELINES


# ---------------------------------------------------------------------------------------------
# Interview: conversational lines, composed from clauses.

INTERVIEW_SHORT = [
    "Hát, ez jó kérdés.",
    "Ez így van, pontosan.",
    "Nem is tudom, mit mondjak.",
    "Nagyon szerettem csinálni.",
    "Erre nem számítottam.",
    "Ezt senki sem hitte el.",
    "Mindig is kíváncsi voltam.",
    "Ma már másképp látom.",
    "Ez egy hosszú történet.",
    "Higgye el, nem volt könnyű.",
    "Persze, szívesen elmondom.",
    "Ez a titkom.",
    "Akkor még fiatal voltam.",
    "Jó, hogy megkérdezte.",
    "Ezen sokat gondolkodtam.",
    "Nem bántam meg semmit.",
    "Szerintem ez természetes.",
    "Hát, nem egészen.",
    "Így kezdődött minden.",
    "Ez nekem nagyon fontos.",
    "Erről ritkán beszélek.",
    "Azóta sem felejtettem el.",
    "Nevettünk rajta eleget.",
    "Ez volt életem legszebb éve.",
    "Tudja, ez már a múlté.",
    "Olvasni minden nap szoktam.",
    "A nyelv csodálatos dolog.",
    "Ezt máig sajnálom.",
    "Mindenki hibázik néha.",
    "Igen, ez igaz.",
]

INTERVIEW_OPENERS = [
    "Tudja,",
    "Őszintén szólva,",
    "Nézze,",
    "Hát, kérem,",
    "Az igazság az, hogy",
    "Ha jól emlékszem,",
    "Ami azt illeti,",
    "Bevallom,",
    "Szerintem",
    "Annak idején",
    "Amikor fiatal voltam,",
    "Valójában",
    "Mindig azt mondom, hogy",
    "Egyébként",
    "Elárulom Önnek, hogy",
]

INTERVIEW_CLAUSES = [
    "a televízió egészen más világ volt akkoriban",
    "mindig is szerettem a rejtvényeket és a fejtörőket",
    "a stúdióban minden este izgultam egy kicsit",
    "a játékosok sokszor jobban tudták a választ, mint gondolták",
    "1987-ben kezdtem el a képernyőn dolgozni",
    "harminc év alatt rengeteg emberrel találkoztam",
    "a legnehezebb kérdéseket mindig a szerkesztők írták",
    "otthon a családommal keresztrejtvényt fejtünk vasárnaponként",
    "a magyar nyelv gazdagsága mindig lenyűgözött",
    "a nézők levelei nagyon sokat jelentettek nekem",
    "egyszer egy játékos a legutolsó kérdésnél hibázott",
    "a felvételek előtt mindig elolvastam a napi újságokat",
    "a tudás nem a lexikális adatokon múlik, hanem a kíváncsiságon",
    "a gyerekek ma sokkal többet tudnak, mint mi annak idején",
    "a kvízműsor lényege a feszültség és a játék öröme",
    "sokan megállítanak az utcán, és kérdeznek tőlem valamit",
    "a helyesírás szabályait ma is komolyan veszem",
    "a rádióban kezdtem, ott tanultam meg beszélni",
    "12 évig vezettem ugyanazt a műsort",
    "a kollégáim nélkül semmi sem sikerült volna",
    "minden kérdés mögött egy kis történet rejlik",
    "a közönség reakcióját mindig megéreztem",
    "a legjobb pillanatok a váratlan válaszok voltak",
    "Debrecenben és Szegeden is forgattunk vidéki adásokat",
    "a könyveimet esténként, a konyhaasztalnál írtam",
    "a humor nélkül ezt a munkát nem lehet csinálni",
    "a fiatal kollégáknak mindig azt tanácsolom, hogy legyenek természetesek",
    "a kamerák előtt az ember nem tud hazudni",
    "a 2000-es évek elején minden megváltozott a képernyőn",
    "a szüleim tanítottak meg arra, hogy tiszteljem a tudást",
]

INTERVIEW_CONNECTORS = ["és", "de", "ezért", "viszont", "mert", "ugyanakkor", "és persze"]

INTERVIEW_QUESTIONS = [
    "És Ön mit gondol erről?",
    "Tudja, mi volt a legnehezebb kérdés?",
    "Hogyan is mondjam ezt szépen?",
    "Miért is lenne ez másképp ma?",
    "Emlékszik még arra az adásra?",
    "Nem gondolja, hogy ez egy kicsit túlzás?",
]


def interview_sentences(seed: int = 0, count: int = 231) -> list[str]:
    """The interview corpus: `count` distinct lines, deterministic for `seed`.

    About a sixth are short standalone lines, a quarter medium (opener + clause) and the rest long
    (opener + two or three joined clauses), which lands in the seed corpus's 2-10 s range.
    """
    rng = random.Random(seed)
    lines: list[str] = list(INTERVIEW_SHORT) + list(INTERVIEW_QUESTIONS)
    seen = set(lines)
    n_medium = count // 4
    while len(lines) < count:
        opener = rng.choice(INTERVIEW_OPENERS)
        n_clauses = (
            1 if len(lines) < len(INTERVIEW_SHORT) + len(INTERVIEW_QUESTIONS) + n_medium else rng.choice((2, 2, 3))
        )
        clauses = rng.sample(INTERVIEW_CLAUSES, n_clauses)
        text = f"{opener} {clauses[0]}"
        for clause in clauses[1:]:
            text += f", {rng.choice(INTERVIEW_CONNECTORS)} {clause}"
        text = text[0].upper() + text[1:] + "."
        if text not in seen:
            seen.add(text)
            lines.append(text)
    rng.shuffle(lines)
    return lines


def all_demo_sentences() -> list[str]:
    """Every line either corpus can hold (the interview at several seeds): the tiny vocab's training text."""
    texts = quiz_sentences()
    for seed in range(4):
        texts += interview_sentences(seed)
    return texts
