from bookings.views import announce_booking
from django.urls import path

urlpatterns = [path("bookings/<int:booking_id>/announce", announce_booking)]
